package auth_test

import (
	"crypto/rand"
	"crypto/rsa"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwt"

	"github.com/digis/jobworker/internal/auth"
)

// BenchmarkVerify compares Verify (header parse and alg pin, then jwx) with
// the baseline of a bare jwx jwt.Parse with the same key and checks.
func BenchmarkVerify(b *testing.B) {
	token := sign(b, jwa.HS256, secret, claims())
	a, err := auth.New(auth.Config{HS256Secret: secret, Now: fixedNow})
	if err != nil {
		b.Fatal(err)
	}
	defer a.Close()
	b.Run("baseline_jwx_parse_hs256", func(b *testing.B) {
		for b.Loop() {
			if _, err := jwt.ParseString(token, jwt.WithKey(jwa.HS256, secret), jwt.WithClock(jwt.ClockFunc(fixedNow)),
				jwt.WithAcceptableSkew(5*time.Second), jwt.WithRequiredClaim("sub"), jwt.WithRequiredClaim("exp")); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("verify_hs256", func(b *testing.B) {
		for b.Loop() {
			if _, err := a.Verify(b.Context(), token); err != nil {
				b.Fatal(err)
			}
		}
	})
	raw, _ := rsa.GenerateKey(rand.Reader, 2048)
	key := privateKey(b, raw, "k1", jwa.RS256)
	srv := newJWKSServer(b, key)
	ra, err := auth.New(auth.Config{JWKSURL: srv.URL, Now: fixedNow})
	if err != nil {
		b.Fatal(err)
	}
	defer ra.Close()
	rsToken := sign(b, jwa.RS256, key, claims())
	b.Run("verify_rs256_jwks", func(b *testing.B) {
		for b.Loop() {
			if _, err := ra.Verify(b.Context(), rsToken); err != nil {
				b.Fatal(err)
			}
		}
	})
}
