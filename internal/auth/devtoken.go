package auth

import (
	"fmt"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwt"
)

// DevToken signs an HS256 token for userID valid for ttl, for the local
// stack to print at start-up (and for tests). It is an ordinary token: any
// Authenticator with the same secret accepts it, so never print one made
// with a production secret.
func DevToken(secret []byte, userID string, ttl time.Duration) (string, error) {
	if len(secret) < MinSecretLen {
		return "", fmt.Errorf("%w: the HS256 secret must be at least %d bytes", ErrInvalidConfig, MinSecretLen)
	}
	if userID == "" || len(userID) > maxSubjectLen || ttl <= 0 {
		return "", fmt.Errorf("%w: DevToken needs a user id of 1-%d bytes and a positive ttl", ErrInvalidConfig, maxSubjectLen)
	}
	now := time.Now()
	tok, err := jwt.NewBuilder().
		Subject(userID).
		IssuedAt(now).
		Expiration(now.Add(ttl)).
		Build()
	if err != nil {
		return "", err
	}
	signed, err := jwt.Sign(tok, jwt.WithKey(jwa.HS256, secret))
	if err != nil {
		return "", err
	}
	return string(signed), nil
}
