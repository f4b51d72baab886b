package outbox

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/digis/jobworker/jobs"
)

func TestBackoff(t *testing.T) {
	t.Parallel()
	const lo, hi = 100 * time.Millisecond, 2 * time.Second
	tests := []struct {
		n        int
		min, max time.Duration // over the jitter
	}{
		{n: 1, min: 50 * time.Millisecond, max: 100 * time.Millisecond},
		{n: 2, min: 100 * time.Millisecond, max: 200 * time.Millisecond},
		{n: 4, min: 400 * time.Millisecond, max: 800 * time.Millisecond},
		{n: 6, min: time.Second, max: 2 * time.Second}, // capped
		{n: 1000, min: time.Second, max: 2 * time.Second},
	}
	for _, tt := range tests {
		for _, rnd := range []float64{0, 0.5, 0.999999} {
			got := backoff(tt.n, lo, hi, func() float64 { return rnd })
			if got < tt.min || got > tt.max {
				t.Errorf("backoff(%d) with jitter %v = %s, want in [%s, %s]", tt.n, rnd, got, tt.min, tt.max)
			}
		}
	}
}

// A delay counts from the enqueuing transaction: it becomes a not-before,
// rounded up to whole seconds.
func TestDecodeDelay(t *testing.T) {
	t.Parallel()
	created := time.Date(2030, 1, 2, 3, 4, 5, 250_000_000, time.UTC)
	tests := []struct {
		name    string
		options string
		want    time.Time
	}{
		{name: "delay", options: `{"delay":30000000000}`, want: time.Date(2030, 1, 2, 3, 4, 36, 0, time.UTC)},
		{name: "whole seconds stay", options: `{"delay":750000000}`, want: time.Date(2030, 1, 2, 3, 4, 6, 0, time.UTC)},
		{name: "not-before kept", options: `{"not_before":"2031-01-01T00:00:00Z"}`, want: time.Date(2031, 1, 1, 0, 0, 0, 0, time.UTC)},
		{name: "none", options: `{}`},
	}
	for _, tt := range tests {
		one := row{kind: "outbox.test", body: `{}`, options: []byte(tt.options), createdAt: created}
		// A multi-job row: each job's delay counts from the same start.
		many := row{jobs: `[{"kind":"outbox.a","body":"{}","options":` + tt.options + `},{"kind":"outbox.b","body":"[1]","options":` + tt.options + `}]`, createdAt: created}
		for _, rw := range []*row{&one, &many} {
			if err := rw.decode(); err != nil {
				t.Fatalf("%s: %v", tt.name, err)
			}
			for _, m := range rw.msgs {
				if !m.Options.NotBefore.Equal(tt.want) || m.Options.Delay != 0 {
					t.Errorf("%s: %s: not-before %v, delay %s; want %v, 0", tt.name, m.Kind, m.Options.NotBefore, m.Options.Delay, tt.want)
				}
			}
		}
		if len(many.msgs) != 2 || many.msgs[1].Kind != "outbox.b" || many.msgs[1].Body != "[1]" {
			t.Errorf("%s: multi-job row decoded as %+v", tt.name, many.msgs)
		}
	}
}

func TestClassify(t *testing.T) {
	t.Parallel()
	pe := func(status int, ra time.Duration) error {
		return fmt.Errorf("wrapped: %w", &jobs.PublishError{Job: "x", StatusCode: status, RetryAfter: ra, Err: errors.New("no")})
	}
	tests := []struct {
		err        error
		class      string
		retryAfter time.Duration
	}{
		{pe(0, 0), classNetwork, 0},
		{pe(429, 3*time.Second), classThrottled, 3 * time.Second},
		{pe(500, 0), classServer, 0},
		{pe(503, time.Second), classServer, time.Second},
		{pe(400, 0), classRejected, 0},
		{pe(413, 0), classRejected, 0},
		{pe(412, 0), classRejected, 0},
		{pe(401, 0), classConfig, 0},
		{pe(403, 0), classConfig, 0},
		{pe(404, 0), classConfig, 0},
		{fmt.Errorf("x: %w", jobs.ErrInvalidOption), classInvalid, 0},
		{errors.New("anything else"), classNetwork, 0},
	}
	for _, tt := range tests {
		class, _, ra := classify(tt.err)
		if class != tt.class || ra != tt.retryAfter {
			t.Errorf("classify(%v) = %s, %s; want %s, %s", tt.err, class, ra, tt.class, tt.retryAfter)
		}
	}
}

func TestNewIDIsUUIDv7(t *testing.T) {
	t.Parallel()
	now := time.UnixMilli(0x0123456789ab)
	id := newID(now)
	if len(id) != 36 || id[:13] != "01234567-89ab" || id[14] != '7' || (id[19] != '8' && id[19] != '9' && id[19] != 'a' && id[19] != 'b') {
		t.Errorf("newID = %s", id)
	}
	if newID(now) == id {
		t.Error("two ids are equal")
	}
}
