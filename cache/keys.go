package cache

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
)

// Key layout (docs/architecture.md): <Prefix>cache:<key> holds the value and
// <Prefix>lock:cache:<key> the mini-lock. Scripts touch both, so they must
// share a Redis Cluster slot:
//   - a key that already carries a hash tag ("status:{42}") is used as is:
//     cache:status:{42}, lock:cache:status:{42};
//   - any other key is wrapped whole in one: cache:{status:42},
//     lock:cache:{status:42};
//   - a Prefix with its own tag ("{app}:") pins everything to its slot.

type redisKeys struct {
	value string
	lock  string
}

type keyer struct {
	prefix    string
	prefixTag bool // the prefix carries a complete hash tag
	hash      bool
}

func newKeyer(prefix string, hash bool) keyer {
	return keyer{prefix: prefix, prefixTag: hasTag(prefix), hash: hash}
}

func (k keyer) keys(key string) (redisKeys, error) {
	if key == "" {
		return redisKeys{}, fmt.Errorf("%w: empty", ErrInvalidKey)
	}
	if k.hash {
		sum := sha256.Sum256([]byte(key))
		key = "h:" + hex.EncodeToString(sum[:16])
	}
	body := key
	if !k.prefixTag && !hasTag(key) {
		body = "{" + key + "}"
	}
	rk := redisKeys{
		value: k.prefix + "cache:" + body,
		lock:  k.prefix + "lock:cache:" + body,
	}
	if slotTag(rk.value) != slotTag(rk.lock) {
		return redisKeys{}, fmt.Errorf("%w: cache and lock keys would hash to different slots", ErrInvalidKey)
	}
	return rk, nil
}

// hasTag reports whether s holds a non-empty Redis Cluster hash tag.
func hasTag(s string) bool {
	i := strings.IndexByte(s, '{')
	if i < 0 {
		return false
	}
	j := strings.IndexByte(s[i+1:], '}')
	return j > 0
}

// slotTag is the part of a key Redis Cluster hashes: the first non-empty
// {tag}, else the whole key.
func slotTag(s string) string {
	i := strings.IndexByte(s, '{')
	if i < 0 {
		return s
	}
	j := strings.IndexByte(s[i+1:], '}')
	if j <= 0 {
		return s
	}
	return s[i+1 : i+1+j]
}

// keyHash is what logs show instead of a key.
func keyHash(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:6])
}
