package limits

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// windowScript decides one request in one round trip: a fixed window that
// starts at the first admitted request of an identifier and ends when the
// counter key expires.
//
// KEYS[1]  the counter key of one (tier, bucket, identifier), hash-tagged
// ARGV[1]  limit: requests admitted per window (integer ≥ 1)
// ARGV[2]  period in milliseconds (integer ≥ 1000)
// ARGV[3]  cost of this request (integer ≥ 0; 0 reads without consuming)
// ARGV[4]  want: requests to take when admitted (integer ≥ cost; the rest is leased)
//
// Returns an array of five integers:
//
//	[1] 1 when admitted, 0 when denied
//	[2] requests used in the current window after this call
//	[3] milliseconds until the window ends (the key's PTTL)
//	[4] the Redis server's clock in Unix milliseconds (TIME)
//	[5] requests taken: min(want, what is left) when admitted, else 0
//
// Why it is shaped like this:
//   - A denied request writes nothing, so it never consumes quota.
//   - Admission depends on cost alone; want only decides how much of what
//     is left the caller takes with it, so a lease never turns an
//     admission into a refusal and never takes the window past its limit.
//   - Every write leaves the key with an expiry: SET … PX opens a window, and a
//     counter found without one (written by hand or by an older release) gets
//     it back, so no key outlives its window.
//   - Window boundaries are the server's key expiry, so the application
//     servers' clocks never enter the decision. A key in its last millisecond
//     (PTTL 0) still exists but counts as expired, so windows are the period
//     long; a client that waits the reported Retry-After is admitted once
//     Redis's cached clock has caught up (within a few milliseconds).
//   - TIME is read after the writes: servers older than 5.0 that replicate
//     scripts verbatim reject writes after a non-deterministic command, and
//     calling redis.replicate_commands() is rejected by Upstash.
//   - All numbers are converted with tonumber: comparing a number with an
//     unconverted ARGV string is always false in Lua, the bug that left
//     another library's keys without a TTL.
const windowScript = windowDecide + `
local r = decide(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]))
local t = redis.call('TIME')
r[4] = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return r
`

// windowDecide is the decision both window scripts run per key, as a Lua
// function: decide(key, limit, period, cost, want) returns the five-integer
// reply of windowScript with [4] (the clock) left 0 for the caller to fill.
const windowDecide = `
local function decide(key, limit, period, cost, want)
  local used = tonumber(redis.call('GET', key) or '0')
  local ttl = period
  if used > 0 then
    ttl = redis.call('PTTL', key)
    if ttl == 0 then
      used = 0
      ttl = period
    elseif ttl < 0 then
      ttl = period
      redis.call('PEXPIRE', key, period)
    end
  end
  local allowed = 0
  local take = 0
  if used + cost <= limit then
    allowed = 1
    take = math.min(want, limit - used)
    if take > 0 then
      if used == 0 then
        redis.call('SET', key, take, 'PX', period)
        used = take
      else
        used = redis.call('INCRBY', key, take)
      end
    end
  end
  return {allowed, used, ttl, 0, take}
end
`

// windowBatchScript decides many requests in one script run: the batch
// form of windowScript (see scriptbatch's Merge), used when concurrent
// decisions leave together on a client whose keys all live on one server.
//
// KEYS[i]        the counter key of decision i (any hash slots: one server only)
// ARGV[4i-3..4i] limit, period, cost and want of decision i, as windowScript's
//
// Returns an array with one element per key, in order: windowScript's reply
// for that decision, or an error reply when a command on that key failed
// (the other decisions stand).
//
// Why it is shaped like this:
//   - Keys are decided in the order given, so two decisions on one key in
//     a batch see each other exactly as two round trips in a row would:
//     each decision is still atomic and the counter never passes limit.
//   - One run instead of one per decision: Redis parses one command, sets
//     up Lua once and writes one reply, which is most of what a decision
//     costs it.
//   - pcall keeps one key's failure (a wrong type written by hand) to that
//     decision instead of failing the batch.
//   - TIME is read once, after every write (see windowScript), and is the
//     same instant for the whole batch.
const windowBatchScript = windowDecide + `
local out = {}
for i = 1, #KEYS do
  local a = (i - 1) * 4
  local ok, r = pcall(decide, KEYS[i], tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4]))
  if not ok then
    if type(r) ~= 'table' or r.err == nil then
      r = {err = tostring(r)}
    end
  end
  out[i] = r
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for i = 1, #out do
  if out[i].err == nil then
    out[i][4] = now
  end
end
return out
`

var (
	window      = redis.NewScript(windowScript)
	windowBatch = redis.NewScript(windowBatchScript)
)

// Client is the part of a go-redis client the limiter uses. *redis.Client,
// *redis.ClusterClient, *redis.Ring and redis.UniversalClient all satisfy it.
type Client interface {
	redis.Scripter
	Del(ctx context.Context, keys ...string) *redis.IntCmd
	Pipeline() redis.Pipeliner
}

// reply is the decoded script answer.
type reply struct {
	allowed bool
	used    int64
	ttl     time.Duration
	now     time.Time // Redis server clock
	taken   int       // requests taken (cost + lease) when admitted
}

func parseReply(v interface{}, err error) (reply, error) {
	if err != nil {
		return reply{}, err
	}
	a, ok := v.([]interface{})
	if !ok || len(a) != 5 {
		return reply{}, fmt.Errorf("limits: unexpected script reply %T", v)
	}
	var n [5]int64
	for i, x := range a {
		if n[i], ok = x.(int64); !ok {
			return reply{}, fmt.Errorf("limits: unexpected script reply element %T", x)
		}
	}
	return reply{
		allowed: n[0] == 1,
		used:    n[1],
		ttl:     time.Duration(n[2]) * time.Millisecond,
		now:     time.UnixMilli(n[3]),
		taken:   int(n[4]),
	}, nil
}
