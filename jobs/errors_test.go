package jobs

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"
)

// The classification the dispatch metrics use, and what RetryAfterOf reads
// (the HTTP answers built from them are tested in package worker).
func TestClassifyAndRetryAfter(t *testing.T) {
	t.Parallel()
	sentinel := errors.New("boom")
	none := time.Duration(-1)
	tests := []struct {
		name      string
		given     error
		wantClass class
		wantAfter time.Duration // -1: none requested
	}{
		{"nil", nil, classOK, none},
		{"plain error", sentinel, classRetry, none},
		{"deadline", context.DeadlineExceeded, classRetry, none},
		{"permanent", Permanent(sentinel), classPermanent, none},
		{"permanent nil", Permanent(nil), classPermanent, none},
		{"wrapped permanent", fmt.Errorf("ctx: %w", Permanent(sentinel)), classPermanent, none},
		{"retry after", RetryAfter(1500*time.Millisecond, sentinel), classRetry, 1500 * time.Millisecond},
		{"retry after zero", RetryAfter(0, nil), classRetry, 0},
		{"retry after negative", RetryAfter(-time.Second, nil), classRetry, 0},
		{"retry after clamped", RetryAfter(48*time.Hour, nil), classRetry, MaxRetryAfter},
		{"wrapped retry after", fmt.Errorf("x: %w", RetryAfter(time.Minute, sentinel)), classRetry, time.Minute},
		{"permanent beats retry after", Permanent(RetryAfter(time.Minute, sentinel)), classPermanent, time.Minute},
		{"retry after around permanent", RetryAfter(time.Minute, Permanent(sentinel)), classPermanent, time.Minute},
		{"panic", &PanicError{Job: "a", Value: "x"}, classRetry, none},
		{"unknown job", Permanent(fmt.Errorf("%w: x", ErrUnknownJob)), classPermanent, none},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := classify(tt.given); got != tt.wantClass {
				t.Errorf("classify = %v, want %v", got, tt.wantClass)
			}
			after, ok := RetryAfterOf(tt.given)
			if !ok {
				after = none
			}
			if after != tt.wantAfter {
				t.Errorf("RetryAfterOf = %v, want %v", after, tt.wantAfter)
			}
		})
	}
}

func TestControlErrorsKeepCause(t *testing.T) {
	t.Parallel()
	cause := errors.New("cause")
	for _, err := range []error{Permanent(cause), RetryAfter(time.Second, cause), &PanicError{Value: cause}} {
		if !errors.Is(err, cause) {
			t.Errorf("%T does not unwrap to its cause", err)
		}
		if err.Error() == "" {
			t.Errorf("%T has an empty message", err)
		}
	}
	if d, ok := RetryAfterOf(fmt.Errorf("w: %w", RetryAfter(3*time.Second, nil))); !ok || d != 3*time.Second {
		t.Errorf("RetryAfterOf = %v, %v", d, ok)
	}
	if _, ok := RetryAfterOf(cause); ok {
		t.Error("RetryAfterOf(plain) reported a delay")
	}
	if IsPermanent(cause) || IsPermanent(nil) {
		t.Error("IsPermanent(plain or nil) = true")
	}
	if classOK.String() != "ok" || classRetry.String() != "retry" || classPermanent.String() != "permanent" || class(9).String() != "class(9)" {
		t.Error("class.String mismatch")
	}
}

func TestPublishError(t *testing.T) {
	t.Parallel()
	tests := []struct {
		status    int
		temporary bool
	}{{0, true}, {400, false}, {401, false}, {412, false}, {429, true}, {500, true}, {503, true}}
	for _, tt := range tests {
		e := &PublishError{Job: "a.b", StatusCode: tt.status, Err: context.Canceled}
		if e.Temporary() != tt.temporary {
			t.Errorf("status %d: Temporary = %v", tt.status, e.Temporary())
		}
		if !errors.Is(e, ErrPublish) || !errors.Is(e, context.Canceled) {
			t.Errorf("status %d: errors.Is fails", tt.status)
		}
	}
}

func TestValidateName(t *testing.T) {
	t.Parallel()
	long := make([]byte, MaxNameLength+1)
	for i := range long {
		long[i] = 'a'
	}
	tests := []struct {
		name string
		ok   bool
	}{
		{"streams.notify-followers", true},
		{"tips.settle", true},
		{"stripe.event", true},
		{"a", true},
		{"a1_b2.c3-d4", true},
		{string(long[:MaxNameLength]), true},
		{"", false},
		{string(long), false},
		{"Streams.notify", false},
		{"1abc", false},
		{".abc", false},
		{"abc.", false},
		{"a..b", false},
		{"a.-b", false},
		{"a/b", false},
		{"a b", false},
		{"a%2Fb", false},
		{"ünïcode", false},
	}
	for _, tt := range tests {
		err := ValidateName(tt.name)
		if (err == nil) != tt.ok {
			t.Errorf("ValidateName(%q) = %v, want ok=%v", tt.name, err, tt.ok)
		}
		if err != nil && !errors.Is(err, ErrInvalidName) {
			t.Errorf("ValidateName(%q) error does not wrap ErrInvalidName", tt.name)
		}
	}
}

func TestTraceparent(t *testing.T) {
	t.Parallel()
	const valid = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	tests := []struct {
		given string
		ok    bool
	}{
		{valid, true},
		{"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra", true},
		{valid + "-extra", false}, // version 00 has no extra fields
		{"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", false},
		{"00-00000000000000000000000000000000-00f067aa0ba902b7-01", false},
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", false},
		{"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", false},
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7", false},
		{"", false},
		{"00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01", false},
	}
	for _, tt := range tests {
		ctx := WithTraceparent(context.Background(), tt.given)
		got := TraceparentFromContext(ctx)
		if ok := got != ""; ok != tt.ok || (ok && got != tt.given) {
			t.Errorf("WithTraceparent(%q) stored %q, want ok=%v", tt.given, got, tt.ok)
		}
	}
}

func TestDeliveryFromHeader(t *testing.T) {
	t.Parallel()
	h := http.Header{}
	h.Set("Upstash-Message-Id", "msg_1")
	h.Set("Upstash-Retried", "2")
	h.Set("Upstash-Schedule-Id", "scd_1")
	h.Set("Upstash-Topic-Name", "grp")
	h.Set("Upstash-Region", "EU-CENTRAL-1")
	h.Set("Traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	want := Delivery{MessageID: "msg_1", Retried: 2, ScheduleID: "scd_1", URLGroup: "grp", Region: "EU-CENTRAL-1",
		Traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
	if got := DeliveryFromHeader(h); got != want {
		t.Errorf("got %+v, want %+v", got, want)
	}
	if want.Attempt() != 3 {
		t.Errorf("Attempt = %d", want.Attempt())
	}
	bad := http.Header{"Upstash-Retried": {"-1"}, "Traceparent": {"garbage"}}
	if got := DeliveryFromHeader(bad); got != (Delivery{}) {
		t.Errorf("malformed headers gave %+v", got)
	}
}
