package qstashdev

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"hash"
	mrand "math/rand/v2"
	"strconv"
	"sync"
	"time"
)

// The Upstash-Signature payload (docs/qstash-protocol.md §5.1) has the
// claims iss, sub, exp, nbf, iat, jti and body in the order production
// uses, so tokens match the test vectors of docs/qstash-protocol.md §5.5
// byte for byte.

// tokenLifetime is how long a delivery token is valid
// (docs/qstash-protocol.md §5.1).
const tokenLifetime = 300 * time.Second

// bodyHash is base64url(SHA-256(body)) with padding, as production sends it.
func bodyHash(body []byte) string {
	sum := sha256.Sum256(body)
	return base64.URLEncoding.EncodeToString(sum[:])
}

// tokenHeader is base64url({"alg":"HS256","typ":"JWT"}), the protected
// header of every delivery token (docs/qstash-protocol.md §5.1).
const tokenHeader = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"

// signToken mints the HS256 JWT for one delivery attempt
// (docs/qstash-protocol.md §5.1). The key is
// the UTF-8 bytes of the whole "sig_..." string, not a decoded secret.
//
// It is built by hand (one buffer, one HMAC) rather than through a JWT
// library: it runs once per delivery attempt and was the largest CPU cost
// of a delivery. TestSignTokenMatchesReferenceVectors pins the bytes.
func signToken(key, sub string, body []byte, now time.Time, jti string, nbf int64) (string, error) {
	return signTokenHash(key, sub, bodyHash(body), now, jti, nbf)
}

// signTokenHash is signToken with the body's hash (bodyHash) already known.
func signTokenHash(key, sub, bodyHash string, now time.Time, jti string, nbf int64) (string, error) {
	var claims [512]byte
	p := claims[:0]
	p = append(p, `{"iss":"Upstash","sub":`...)
	p = appendJSONString(p, sub)
	p = append(p, `,"exp":`...)
	p = strconv.AppendInt(p, now.Add(tokenLifetime).Unix(), 10)
	p = append(p, `,"nbf":`...)
	p = strconv.AppendInt(p, nbf, 10)
	p = append(p, `,"iat":`...)
	p = strconv.AppendInt(p, now.Unix(), 10)
	p = append(p, `,"jti":`...)
	p = appendJSONString(p, jti)
	p = append(p, `,"body":`...)
	p = appendJSONString(p, bodyHash)
	p = append(p, '}')

	enc := base64.RawURLEncoding
	out := make([]byte, 0, len(tokenHeader)+1+enc.EncodedLen(len(p))+1+enc.EncodedLen(sha256.Size))
	out = append(out, tokenHeader...)
	out = append(out, '.')
	out = enc.AppendEncode(out, p)
	mac := getMAC(key)
	mac.h.Write(out)
	var sum [sha256.Size]byte
	out = append(out, '.')
	out = enc.AppendEncode(out, mac.h.Sum(sum[:0]))
	macs.Put(mac)
	return string(out), nil
}

// keyedMAC is an HMAC-SHA256 keyed with key, reused across tokens: keying
// one hashes the key twice, and the key changes only on rotation.
type keyedMAC struct {
	key string
	h   hash.Hash
}

var macs sync.Pool

// getMAC returns a reset HMAC for key; put it back into macs when done.
func getMAC(key string) *keyedMAC {
	if m, _ := macs.Get().(*keyedMAC); m != nil && m.key == key {
		m.h.Reset()
		return m
	}
	return &keyedMAC{key: key, h: hmac.New(sha256.New, []byte(key))}
}

// appendJSONString appends v as a JSON string the way encoding/json does
// with HTML escaping off (production does not escape & < > in the URL).
// Plain printable ASCII is copied; anything else goes through
// encoding/json, so the bytes never differ from it.
func appendJSONString(dst []byte, v string) []byte {
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' {
			var buf bytes.Buffer
			enc := json.NewEncoder(&buf)
			enc.SetEscapeHTML(false)
			_ = enc.Encode(v) // a string always encodes
			return append(dst, bytes.TrimSuffix(buf.Bytes(), []byte("\n"))...)
		}
	}
	dst = append(dst, '"')
	dst = append(dst, v...)
	return append(dst, '"')
}

const base58Alphabet = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"

// randomID returns prefix + n base58 characters from crypto/rand; used for
// schedule ids (scd_) and signing keys (sig_).
func randomID(prefix string, n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails (crypto/rand since Go 1.24)
	out := make([]byte, 0, len(prefix)+n)
	out = append(out, prefix...)
	for _, c := range b {
		// 256 % 58 bias is irrelevant for ids in a dev server.
		out = append(out, base58Alphabet[int(c)%len(base58Alphabet)])
	}
	return string(out)
}

// fastID is randomID from the runtime's per-thread ChaCha8 generator
// (math/rand/v2) instead of a getrandom system call: for the ids minted
// on every publish and attempt, message ids (msg_) and token ids (jwt_),
// which must be unique and unguessable, not secret.
func fastID(prefix string, n int) string {
	out := make([]byte, len(prefix), len(prefix)+n)
	copy(out, prefix)
	for len(out) < cap(out) {
		r := mrand.Uint64()
		for i := 0; i < 8 && len(out) < cap(out); i++ {
			out = append(out, base58Alphabet[int(byte(r))%len(base58Alphabet)])
			r >>= 8
		}
	}
	return string(out)
}
