package auth_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/digis/jobworker/internal/auth"
	"github.com/digis/jobworker/internal/validtext"
)

// TestForgeryAndInvalidSubject: which refusals count as possible forgeries
// (the rate-limited ones), and a signed token whose sub is not text is
// refused with an error that says so.
func TestForgeryAndInvalidSubject(t *testing.T) {
	t.Parallel()
	secret := []byte(strings.Repeat("k", auth.MinSecretLen))
	a, err := auth.New(auth.Config{HS256Secret: secret})
	if err != nil {
		t.Fatal(err)
	}
	good, err := auth.DevToken(secret, "user-1", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	other, err := auth.DevToken([]byte(strings.Repeat("o", auth.MinSecretLen)), "user-1", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	nul, err := auth.DevToken(secret, "user\x00", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, tc := range []struct {
		name, token string
		forgery     bool
	}{
		{"malformed", "a.b", true},
		{"not base64", "a.b.c", true},
		{"signed with another secret", other, true},
		{"signature changed", good[:len(good)-3] + "AAA", true},
		{"sub with a NUL", nul, false},
	} {
		_, err := a.Verify(ctx, tc.token)
		if !errors.Is(err, auth.ErrInvalidToken) || auth.Forgery(err) != tc.forgery {
			t.Errorf("%s: %v (forgery %v), want forgery %v", tc.name, err, auth.Forgery(err), tc.forgery)
		}
	}
	_, err = a.Verify(ctx, nul)
	if !errors.Is(err, validtext.ErrInvalid) || !strings.Contains(err.Error(), "bad_subject") {
		t.Fatalf("sub with a NUL: %v", err)
	}
	if _, err := a.Verify(ctx, good); err != nil {
		t.Fatal(err)
	}
}
