package appjobs_test

import (
	"strings"
	"testing"
	"time"

	"github.com/digis/jobworker/internal/appjobs"
	"github.com/digis/jobworker/jobs"
)

func TestCacheKeys(t *testing.T) {
	t.Parallel()
	if got := appjobs.StatusCacheKey("alice_1"); got != "status:{alice_1}" {
		t.Fatalf("status key %q", got)
	}
	if got := appjobs.TipCountCacheKey("u_42"); got != "count:tips:30d:{u_42}" {
		t.Fatalf("count key %q", got)
	}
	// An id that would break the hash tag is hashed instead.
	for _, id := range []string{"a}b", "{x}", "fan@example.com", strings.Repeat("z", 129)} {
		got := appjobs.TipCountCacheKey(id)
		inner := strings.TrimSuffix(strings.TrimPrefix(got, "count:tips:30d:{"), "}")
		if strings.ContainsAny(inner, "{}") || strings.Contains(got, id) || len(inner) != 33 {
			t.Fatalf("%q → %q", id, got)
		}
	}
	// The old encoding's collision: the hash of an id that needs hashing,
	// sent as a raw id, named the same key.
	hashed := appjobs.TipCountCacheKey("{x}")
	inner := strings.TrimSuffix(strings.TrimPrefix(hashed, "count:tips:30d:{"), "}")
	for _, raw := range []string{inner, "h" + inner[1:], inner[1:]} {
		if appjobs.TipCountCacheKey(raw) == hashed {
			t.Fatalf("creator ids {x} and %q share the key %q", raw, hashed)
		}
	}
}

func TestJobPayloads(t *testing.T) {
	t.Parallel()
	at := time.Unix(1700000000, 0)
	tests := []struct {
		name  string
		args  interface{ Validate() error }
		valid bool
	}{
		{"stream ok", appjobs.StreamStatusChanged{StreamID: 1, CreatorID: "c", Username: "abc", Live: true, ChangedAt: at}, true},
		{"stream without id", appjobs.StreamStatusChanged{CreatorID: "c", Username: "abc"}, false},
		{"stream bad username", appjobs.StreamStatusChanged{StreamID: 1, CreatorID: "c", Username: "A B"}, false},
		{"tip ok", appjobs.TipCreated{TipID: 1, StreamID: 2, CreatorID: "c", Amount: 5}, true},
		{"tip zero amount", appjobs.TipCreated{TipID: 1, CreatorID: "c"}, false},
		{"refresh ok", appjobs.RefreshTipCount{CreatorID: "c"}, true},
		{"refresh without creator", appjobs.RefreshTipCount{}, false},
	}
	for _, tt := range tests {
		if err := tt.args.Validate(); (err == nil) != tt.valid {
			t.Errorf("%s: Validate() = %v", tt.name, err)
		}
	}
	for _, a := range []jobs.Args{appjobs.StreamStatusChanged{}, appjobs.TipCreated{}, appjobs.RefreshTipCount{}} {
		if err := jobs.ValidateName(a.Kind()); err != nil {
			t.Errorf("%T: %v", a, err)
		}
	}
}
