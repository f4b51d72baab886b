package idempotency_test

import (
	"testing"
	"time"

	"github.com/digis/jobworker/idempotency"
)

func TestParseTTL(t *testing.T) {
	t.Parallel()
	tests := []struct {
		given   string
		want    time.Duration
		wantErr bool
	}{
		{"30s", 30 * time.Second, false},
		{"24h", 24 * time.Hour, false},
		{" 7d ", 7 * 24 * time.Hour, false},
		{"1h30m", 90 * time.Minute, false},
		{"", 0, true},
		{"0s", 0, true},
		{"-1h", 0, true},
		{"0d", 0, true},
		{"1.5d", 0, true},
		{"d", 0, true},
		{"99999d", 0, true},
		{"ten", 0, true},
	}
	for _, tt := range tests {
		got, err := idempotency.ParseTTL(tt.given)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("ParseTTL(%q) = %v, %v; want %v, err=%v", tt.given, got, err, tt.want, tt.wantErr)
		}
	}
}
