package qstashdev

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jws"
)

// signingClaims is the Upstash-Signature payload
// (docs/qstash-protocol.md §5.1). The field order is the one production
// uses, so tokens match the test vectors of docs/qstash-protocol.md §5.5
// byte for byte.
type signingClaims struct {
	Iss  string `json:"iss"`
	Sub  string `json:"sub"`
	Exp  int64  `json:"exp"`
	Nbf  int64  `json:"nbf"`
	Iat  int64  `json:"iat"`
	Jti  string `json:"jti"`
	Body string `json:"body"`
}

// tokenLifetime is how long a delivery token is valid
// (docs/qstash-protocol.md §5.1).
const tokenLifetime = 300 * time.Second

// bodyHash is base64url(SHA-256(body)) with padding, as production sends it.
func bodyHash(body []byte) string {
	sum := sha256.Sum256(body)
	return base64.URLEncoding.EncodeToString(sum[:])
}

// signToken mints the HS256 JWT for one delivery attempt
// (docs/qstash-protocol.md §5.1). The key is
// the UTF-8 bytes of the whole "sig_..." string, not a decoded secret.
func signToken(key, sub string, body []byte, now time.Time, jti string, nbf int64) (string, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	// Production does not escape & < > in the URL; keeping them verbatim keeps
	// tokens identical to the reference vectors.
	enc.SetEscapeHTML(false)
	if err := enc.Encode(signingClaims{
		Iss: "Upstash", Sub: sub,
		Exp: now.Add(tokenLifetime).Unix(), Nbf: nbf, Iat: now.Unix(),
		Jti: jti, Body: bodyHash(body),
	}); err != nil {
		return "", err
	}
	payload := bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
	hdr := jws.NewHeaders()
	if err := hdr.Set(jws.TypeKey, "JWT"); err != nil {
		return "", err
	}
	tok, err := jws.Sign(payload, jws.WithKey(jwa.HS256, []byte(key), jws.WithProtectedHeaders(hdr)))
	if err != nil {
		return "", fmt.Errorf("sign delivery token: %w", err)
	}
	return string(tok), nil
}

const base58Alphabet = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"

// randomID returns prefix + n base58 characters from crypto/rand; used for
// message ids (msg_), schedule ids (scd_), token ids (jwt_) and keys (sig_).
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
