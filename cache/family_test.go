package cache

import (
	"context"
	"testing"
	"time"
)

func TestKeyFamily(t *testing.T) {
	t.Parallel()
	tests := []struct{ given, want string }{
		{"status:{alice}", "status"},
		{"count:tips:30d:{42}", "count"},
		{"status", "_other"},              // no segment: could be anything
		{"Alice@example.com:x", "_other"}, // not a lower-case word
		{"u123:profile", "_other"},        // digits: an id
		{":x", "_other"},
		{"averyveryverylongfamilyname:x", "_other"},
	}
	for _, tt := range tests {
		if got := keyFamily(tt.given); got != tt.want {
			t.Errorf("keyFamily(%q) = %q, want %q", tt.given, got, tt.want)
		}
	}
}

// The family label is bounded: past maxFamilies, new families count as
// _other.
func TestFamilyLabelBounded(t *testing.T) {
	t.Parallel()
	c, reg := setup(t, Config{}).instance(t, Config{})
	ctx := context.Background()
	for i := range maxFamilies + 5 {
		fam := "f" + string(rune('a'+i/26)) + string(rune('a'+i%26))
		if _, err := GetOrCompute(ctx, c, fam+":{1}", time.Minute, func(context.Context) (int, error) { return i, nil }); err != nil {
			t.Fatal(err)
		}
	}
	mfs, _ := reg.Gather()
	families := map[string]bool{}
	for _, mf := range mfs {
		if mf.GetName() != "jobworker_cache_requests_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "family" {
					families[l.GetValue()] = true
				}
			}
		}
	}
	if len(families) != maxFamilies+1 || !families[otherFamily] {
		t.Errorf("%d family label values (other: %v), want %d and _other", len(families), families[otherFamily], maxFamilies+1)
	}
	if got := counter(t, reg, "jobworker_cache_requests_total", "family", otherFamily); got != 5 {
		t.Errorf("_other counted %v, want 5", got)
	}
}
