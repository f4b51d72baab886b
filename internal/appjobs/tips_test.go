package appjobs_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"testing"

	"github.com/digis/jobworker/cache"
	"github.com/digis/jobworker/internal/appjobs"
	"github.com/digis/jobworker/internal/redistest"
	"github.com/digis/jobworker/internal/store"
	"github.com/digis/jobworker/jobs"
)

// TestRefreshTipCountsSchedule: the periodic job is declared every
// TipCountTTL, and one run writes the 30-day count of every tipped creator
// to its cache key.
func TestRefreshTipCountsSchedule(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st, err := store.NewMemory(store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	rdb := redistest.Start(t).Client(t)
	c, err := cache.New(rdb, cache.Config{Prefix: "jw:"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close(ctx) })
	reg, _ := jobs.NewRegistry(jobs.RegistryConfig{})
	if err := appjobs.Register(reg, appjobs.Deps{Log: slog.New(slog.DiscardHandler), Store: st, Cache: c}); err != nil {
		t.Fatal(err)
	}
	p := reg.Periodic()
	if len(p) != 1 || p[0].Name != "tips.refresh-counts" || p[0].Cron != appjobs.TipCountsCron {
		t.Fatalf("periodic jobs = %+v", p)
	}

	for _, creator := range []string{"alice", "bob"} {
		s, err := st.StartStream(ctx, store.StartStreamRequest{CreatorID: creator, Username: creator + "_live"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st.Credit(ctx, "fan", 100, "pi_"+creator); err != nil {
			t.Fatal(err)
		}
		if _, err := st.Tip(ctx, store.TipRequest{TipperID: "fan", StreamID: s.ID, Amount: 7, IdempotencyKey: creator}); err != nil {
			t.Fatal(err)
		}
	}
	body, _ := json.Marshal(appjobs.RefreshTipCounts{})
	if err := reg.Dispatch(ctx, "tips.refresh-counts", jobs.Delivery{MessageID: "m1"}, body); err != nil {
		t.Fatal(err)
	}
	for _, creator := range []string{"alice", "bob"} {
		key := "jw:cache:" + appjobs.TipCountCacheKey(creator)
		ttl, err := rdb.PTTL(ctx, key).Result()
		if err != nil || ttl <= 0 || ttl > appjobs.TipCountTTL {
			t.Errorf("%s: ttl %v, %v", key, ttl, err)
		}
	}
	if err := reg.Dispatch(ctx, "tips.refresh-counts", jobs.Delivery{}, []byte(`{"limit":-1}`)); !jobs.IsPermanent(err) {
		t.Errorf("a bad limit = %v, want permanent", err)
	}
}
