// Package keyid is the one encoding of an id (a user id, a message id, a
// token's jti) inside a Redis key. It is injective: two different ids never
// share a key.
//
//   - An id of 1 to MaxRaw bytes of [A-Za-z0-9_.-] is used as it is, so
//     the usual ids stay readable in a key browser ("creator-42",
//     "msg_26hZ…").
//   - Any other id (braces that would break a Cluster hash tag, ':' that
//     would fake a key's layout, '@' of an e-mail address, white space,
//     anything longer) becomes "~" and 32 hex digits of its SHA-256.
//
// A raw id never contains "~", so no raw id can equal a hashed one; two
// hashed ids collide only if SHA-256 truncated to 128 bits does. An earlier
// encoding wrote hashes as "h<hex>", which a raw id could spell.
package keyid

import (
	"crypto/sha256"
	"encoding/hex"
)

// MaxRaw is the longest id kept as it is.
const MaxRaw = 128

// HashMark starts every hashed id; raw ids never contain it.
const HashMark = "~"

// Encode returns id as it goes into a Redis key.
func Encode(id string) string {
	if Raw(id) {
		return id
	}
	sum := sha256.Sum256([]byte(id))
	return HashMark + hex.EncodeToString(sum[:16])
}

// Raw reports whether Encode keeps id as it is.
func Raw(id string) bool {
	if id == "" || len(id) > MaxRaw {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '-') {
			return false
		}
	}
	return true
}
