package idempotency

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"hash"
	"strings"
)

// Key format (published, as the IETF draft asks): 1 to MaxKeyLength
// (default 255) printable ASCII characters, sent once, either bare
// (Idempotency-Key: 8e03978e-40d5-43e8-bc93-6894a57f9324) or as an RFC 8941
// sf-string (Idempotency-Key: "8e03978e-..."), which may escape \" and \\.
// Both forms of the same value name the same key. A bare key may not contain
// a comma or a double quote: a comma is what two headers folded into one
// look like. Use a UUIDv4 or equally random value.

var (
	errKeyMissing   = errors.New("the Idempotency-Key header is required")
	errKeyDuplicate = errors.New("send exactly one Idempotency-Key header")
	errKeyEmpty     = errors.New("the Idempotency-Key header is empty")
	errKeyTooLong   = errors.New("the Idempotency-Key is too long")
	errKeyChars     = errors.New("the Idempotency-Key must be printable ASCII (bare, or an RFC 8941 quoted string)")
)

// parseKey validates the header values and returns the key's value.
func parseKey(values []string, maxLen int) (string, error) {
	switch len(values) {
	case 0:
		return "", errKeyMissing
	case 1:
	default:
		return "", errKeyDuplicate
	}
	v := strings.Trim(values[0], " \t")
	if v == "" {
		return "", errKeyEmpty
	}
	var key string
	if v[0] == '"' {
		var ok bool
		if key, ok = parseSFString(v); !ok {
			return "", errKeyChars
		}
	} else {
		for i := 0; i < len(v); i++ {
			if b := v[i]; b < 0x20 || b > 0x7e || b == ',' || b == '"' {
				return "", errKeyChars
			}
		}
		key = v
	}
	switch {
	case key == "":
		return "", errKeyEmpty
	case len(key) > maxLen:
		return "", errKeyTooLong
	}
	return key, nil
}

// parseSFString decodes an RFC 8941 sf-string that must make up the whole
// value (no parameters).
func parseSFString(v string) (string, bool) {
	if len(v) < 2 || v[0] != '"' {
		return "", false
	}
	var b strings.Builder
	for i := 1; i < len(v); i++ {
		c := v[i]
		switch {
		case c == '\\':
			i++
			if i >= len(v) || (v[i] != '"' && v[i] != '\\') {
				return "", false
			}
			b.WriteByte(v[i])
		case c == '"':
			return b.String(), i == len(v)-1
		case c < 0x20 || c > 0x7e:
			return "", false
		default:
			b.WriteByte(c)
		}
	}
	return "", false // no closing quote
}

// scopedKey is the storage key: a hash of principal, method, route template
// and the client's key. Hashing keeps client input and user ids out of Redis
// keys (no injection into the key layout, no PII) and scoping means a key
// never replays across users or routes.
func scopedKey(principal, method, route, key string) string {
	h := sha256.New()
	writeField(h, principal)
	writeField(h, method)
	writeField(h, route)
	writeField(h, key)
	return hex.EncodeToString(h.Sum(nil))
}

// fingerprint identifies the request that first used a key: method, path
// with query, and the raw body bytes. Raw bytes on purpose: the same JSON
// with different formatting is a different request (422), which is
// predictable and cheap; clients that retry resend the same bytes.
func fingerprint(method, uri string, body []byte) string {
	h := sha256.New()
	writeField(h, method)
	writeField(h, uri)
	bh := sha256.Sum256(body)
	h.Write(bh[:])
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// downstreamKey is the server-derived key a handler passes to a payment
// provider (Brandur's rule: never forward the client's key).
func downstreamKey(storage string) string {
	h := sha256.New()
	writeField(h, "downstream")
	writeField(h, storage)
	return "idem_" + hex.EncodeToString(h.Sum(nil)[:20])
}

// writeField length-prefixes s so ("ab","c") and ("a","bc") differ.
func writeField(h hash.Hash, s string) {
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], uint64(len(s)))
	h.Write(n[:])
	h.Write([]byte(s))
}
