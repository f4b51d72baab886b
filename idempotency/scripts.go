package idempotency

import "github.com/redis/go-redis/v9"

// The record is one Redis hash per key, so every script touches exactly one
// key and runs unchanged on Redis Cluster and Upstash. Fields:
//
//	s  state: "lease" while a caller holds it, "done" once completed
//	o  owner token of the lease holder (only while s = "lease")
//	f  fingerprint of the request that created the record ("" = unchecked)
//	v  the stored result (only while s = "done")
//
// The key's TTL is the lease TTL while leased and the result TTL once done:
// a crashed owner frees the key after one lease, never after a day.
//
// Why scripts and not plain commands: a plain SET NX cannot check a replay
// nonce before it claims, nor refuse to overwrite another owner's record.
// The price, in redis-server CPU per run on Redis 7.0 (redis-benchmark,
// docs/benchmarks.md): acquire with a nonce ~9.5 µs, complete ~5.5 µs,
// against ~2.1 µs for SET NX PX. Most of it is the Lua bridge, paid per
// call inside the script as much as per script: eight acquires merged into
// one EVALSHA cost only ~12% less each, and the same steps on a string
// record (three calls instead of five, two instead of four) ~17% less, which
// would be bought with a binary record encoding parsed in Lua and Go and a
// layout change under running deployments. Every call is one round trip.

// acquireScript claims the key or reports what holds it, in one round trip,
// so "claim" and "read the finished result" can never drift apart.
//
//	KEYS[1] record key
//	KEYS[2] nonce key (optional; same hash tag as KEYS[1])
//	ARGV[1] owner token, ARGV[2] fingerprint, ARGV[3] lease TTL in ms
//	ARGV[4] claim expiry in Unix ms, or 0 for a relative lease TTL
//	ARGV[5] a token of this caller's store whose claim was abandoned ("" none)
//	ARGV[6] nonce TTL in ms, ARGV[7] the digest of KEYS[1] a nonce records
//	returns {1}                      acquired
//	        {2, fingerprint, pttl}   another caller holds the lease
//	        {3, fingerprint, value, pttl} already done
//	        {4}                      the claim expired on arrival (nothing held)
//	        {5}                      the nonce was used with another key
//
// Why it is shaped like this:
//   - The claim's expiry is absolute (PEXPIREAT at the caller's deadline plus
//     a grace) so that a claim Redis runs after its caller gave up (Redis was
//     stalled, the command waited in its socket) is deleted at once instead
//     of blocking the retry for a whole lease. PEXPIREAT with a time in the
//     past deletes the key; EXISTS tells the caller. No TIME call: Redis
//     compares on its own clock, and the script stays deterministic.
//   - A lease held by the caller's own token (go-redis resent the script
//     after a lost reply) or by a token the caller's store abandoned, with
//     the same fingerprint, is taken over rather than reported in progress.
//   - The nonce is checked and recorded first, so a replayed credential
//     claims nothing, while the same credential for the same key (the same
//     request sent twice) gets the usual answer. One SET NX GET does both
//     (it returns the digest already there, or nil after writing ours):
//     measured with redis-benchmark on Redis 7.0, 1–2 µs less Redis CPU per
//     claim than GET then SET (9 µs instead of 10–11). Redis before 7.0
//     refuses NX with GET; the script then falls back to GET and SET.
var acquireScript = redis.NewScript(acquireSource)

const acquireSource = `
if KEYS[2] then
  local seen = redis.pcall('SET', KEYS[2], ARGV[7], 'NX', 'PX', ARGV[6], 'GET')
  if type(seen) == 'table' and seen.err then
    seen = redis.call('GET', KEYS[2])
    if not seen then
      redis.call('SET', KEYS[2], ARGV[7], 'PX', ARGV[6])
    end
  end
  if seen and seen ~= ARGV[7] then
    return {5}
  end
end
local r = redis.call('HMGET', KEYS[1], 's', 'f', 'v', 'o')
if r[1] == 'lease' and r[2] == ARGV[2] and (r[4] == ARGV[1] or (ARGV[5] ~= '' and r[4] == ARGV[5])) then
  r[1] = false
end
if not r[1] then
  redis.call('HSET', KEYS[1], 's', 'lease', 'o', ARGV[1], 'f', ARGV[2])
  if ARGV[4] ~= '0' then
    redis.call('PEXPIREAT', KEYS[1], ARGV[4])
    if redis.call('EXISTS', KEYS[1]) == 0 then
      return {4}
    end
  else
    redis.call('PEXPIRE', KEYS[1], ARGV[3])
  end
  return {1}
end
local ttl = redis.call('PTTL', KEYS[1])
if r[1] == 'done' then
  return {3, r[2] or '', r[3] or '', ttl}
end
return {2, r[2] or '', ttl}
`

// renewScript extends a lease its caller still owns.
//
//	KEYS[1] record key
//	ARGV[1] owner token, ARGV[2] lease TTL in ms
//	returns 1 renewed, 0 not the owner any more (lease lost)
var renewScript = redis.NewScript(`
local r = redis.call('HMGET', KEYS[1], 's', 'o')
if r[1] == 'lease' and r[2] == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
`)

// completeScript turns the caller's lease into a done record. When the key
// has vanished (the lease expired and nobody claimed it since) the record is
// still written: the work did happen, and recording it prevents a re-run. A
// record held or finished by another owner is never overwritten.
//
//	KEYS[1] record key
//	ARGV[1] owner token, ARGV[2] fingerprint, ARGV[3] result, ARGV[4] result TTL in ms
//	returns 1 written, 0 another owner holds or finished the record
var completeScript = redis.NewScript(`
local r = redis.call('HMGET', KEYS[1], 's', 'o')
if r[1] and not (r[1] == 'lease' and r[2] == ARGV[1]) then
  return 0
end
redis.call('HSET', KEYS[1], 's', 'done', 'f', ARGV[2], 'v', ARGV[3])
redis.call('HDEL', KEYS[1], 'o')
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
`)

// releaseScript deletes the record only if the caller still owns the lease
// (compare-and-delete), so a late release never frees a newer owner's lease.
//
//	KEYS[1] record key
//	ARGV[1] owner token
//	returns 1 released, 0 not the owner (nothing deleted)
var releaseScript = redis.NewScript(`
local r = redis.call('HMGET', KEYS[1], 's', 'o')
if r[1] == 'lease' and r[2] == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
`)
