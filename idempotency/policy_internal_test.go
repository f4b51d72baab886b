package idempotency

import (
	"errors"
	"fmt"
	"testing"

	"github.com/labstack/echo/v4"
)

// Every row of decide's table.
func TestDecide(t *testing.T) {
	t.Parallel()
	plain := errors.New("x")
	tests := []struct {
		status   int
		panicked bool
		err      error
		want     decision
	}{
		{200, true, nil, decisionAmbiguous},
		{500, false, NoSideEffect(plain), decisionRelease},
		{201, false, fmt.Errorf("wrapped: %w", NoSideEffect(plain)), decisionRelease},
		{400, false, nil, decisionRelease},
		{401, false, echo.ErrUnauthorized, decisionRelease},
		{403, false, nil, decisionRelease},
		{404, false, nil, decisionRelease},
		{405, false, nil, decisionRelease},
		{413, false, nil, decisionRelease},
		{415, false, nil, decisionRelease},
		{422, false, nil, decisionRelease},
		{429, false, nil, decisionRelease},
		{500, false, plain, decisionAmbiguous},
		{502, false, nil, decisionAmbiguous},
		{503, false, nil, decisionAmbiguous},
		{504, false, nil, decisionAmbiguous},
		{200, false, nil, decisionStore},
		{201, false, nil, decisionStore},
		{204, false, nil, decisionStore},
		{302, false, nil, decisionStore},
		{402, false, nil, decisionStore},
		{409, false, nil, decisionStore},
		{410, false, nil, decisionStore},
	}
	for _, tt := range tests {
		if got := decide(tt.status, tt.panicked, tt.err); got != tt.want {
			t.Errorf("decide(%d, panicked=%v, %v) = %v, want %v", tt.status, tt.panicked, tt.err, got, tt.want)
		}
	}
}

func TestUnwrapNoSideEffectKeepsHTTPError(t *testing.T) {
	t.Parallel()
	he := echo.NewHTTPError(503, "later")
	if got := unwrapNoSideEffect(NoSideEffect(NoSideEffect(he))); got != he {
		t.Fatalf("got %v, want the *echo.HTTPError itself", got)
	}
	if NoSideEffect(nil) != nil {
		t.Fatal("NoSideEffect(nil) != nil")
	}
}

func TestScopedKeyFieldsAreUnambiguous(t *testing.T) {
	t.Parallel()
	if scopedKey("ab", "POST", "/r", "c") == scopedKey("a", "POST", "/r", "bc") {
		t.Fatal("field boundaries collide")
	}
}
