package cache

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// All scripts take the entry's keys through KEYS; the value key and its lock
// share a hash tag (see keys.go), so each script runs within one slot.

// readOrLockScript is the whole miss path in one round trip.
//
//	KEYS[1] value key, KEYS[2] lock key
//	ARGV[1] owner token, ARGV[2] lock TTL (ms), ARGV[3] now (Unix ms)
//	returns {state, entry}: state 1 = the entry is fresh (soft expiry > now);
//	        2 = the lock was free and is now ours; 0 = another owner holds it.
//	        entry is the stored entry, possibly stale, or nil.
var readOrLockScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if v and string.byte(v, 1) == 99 then
  local soft = tonumber(string.sub(v, 2, 14))
  if soft and soft > tonumber(ARGV[3]) then
    return {1, v}
  end
end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {2, v}
end
return {0, v}
`)

// storeScript is the fenced write: the value is stored only while the lock
// is still ours, then the lock is released. A holder whose lock expired,
// was taken over, or was deleted by Invalidate writes nothing.
//
//	KEYS[1] value key, KEYS[2] lock key
//	ARGV[1] owner token, ARGV[2] entry, ARGV[3] hard TTL (ms)
//	returns 1 when stored, 0 when the lock was not ours
var storeScript = redis.NewScript(`
if redis.call('GET', KEYS[2]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  redis.call('DEL', KEYS[2])
  return 1
end
return 0
`)

// unlockScript is compare-and-delete.
//
//	KEYS[1] lock key; ARGV[1] owner token
//	returns 1 when deleted, 0 when the lock was not ours
var unlockScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
`)

// extendScript is compare-and-pexpire, for long computations.
//
//	KEYS[1] lock key; ARGV[1] owner token, ARGV[2] new TTL (ms)
//	returns 1 when extended, 0 when the lock was not ours
var extendScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
`)

type lockState int

const (
	stateHeld lockState = iota
	stateFresh
	stateAcquired
)

// ms converts a duration to whole milliseconds for PX, rounding up so a
// sub-millisecond TTL still expires instead of being rejected.
func ms(d time.Duration) string {
	n := (d + time.Millisecond - 1) / time.Millisecond
	if n < 1 {
		n = 1
	}
	return strconv.FormatInt(int64(n), 10)
}

func (c *Cache) get(ctx context.Context, key string) ([]byte, error) {
	return bounded(c, ctx, func(ctx context.Context) ([]byte, error) {
		return c.rdb.Get(ctx, key).Bytes()
	})
}

func (c *Cache) readOrLock(ctx context.Context, k redisKeys, token string, lockTTL time.Duration) (lockState, []byte, error) {
	type res struct {
		st    lockState
		entry []byte
	}
	now := strconv.FormatInt(c.cfg.Now().UnixMilli(), 10)
	r, err := bounded(c, ctx, func(ctx context.Context) (res, error) {
		v, err := readOrLockScript.Run(ctx, c.rdb, []string{k.value, k.lock}, token, ms(lockTTL), now).Slice()
		if err != nil {
			return res{}, err
		}
		if len(v) == 0 {
			return res{}, fmt.Errorf("cache: unexpected script reply %v", v)
		}
		st, _ := v[0].(int64)
		var entry []byte
		if len(v) > 1 {
			if s, ok := v[1].(string); ok {
				entry = []byte(s)
			}
		}
		return res{lockState(st), entry}, nil
	})
	return r.st, r.entry, err
}

func (c *Cache) store(ctx context.Context, k redisKeys, token string, entry []byte, hardTTL time.Duration) (bool, error) {
	return bounded(c, ctx, func(ctx context.Context) (bool, error) {
		n, err := storeScript.Run(ctx, c.rdb, []string{k.value, k.lock}, token, entry, ms(hardTTL)).Int()
		return n == 1, err
	})
}

func (c *Cache) unlock(ctx context.Context, k redisKeys, token string) {
	_, err := bounded(c, ctx, func(ctx context.Context) (int, error) {
		return unlockScript.Run(ctx, c.rdb, []string{k.lock}, token).Int()
	})
	if err != nil {
		// The lock then expires on its own after LockTTL.
		c.m.redisErrors.WithLabelValues("unlock").Inc()
	}
}

func (c *Cache) extend(ctx context.Context, k redisKeys, token string, ttl time.Duration) (bool, error) {
	return bounded(c, ctx, func(ctx context.Context) (bool, error) {
		n, err := extendScript.Run(ctx, c.rdb, []string{k.lock}, token, ms(ttl)).Int()
		return n == 1, err
	})
}
