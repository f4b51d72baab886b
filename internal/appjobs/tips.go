package appjobs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/digis/jobworker/cache"
	"github.com/digis/jobworker/internal/keyid"
	"github.com/digis/jobworker/internal/store"
	"github.com/digis/jobworker/jobs"
)

// TipCountTTL is how long a creator's 30-day tip count stays cached.
const TipCountTTL = 300 * time.Second

// TipCountCacheKey is the cache key of a creator's 30-day tip count and sum,
// stored as <prefix>cache:count:tips:30d:{<creator id>}, the id encoded by
// keyid (raw when plain, else "~" and a hash), so two creators never share
// a key.
func TipCountCacheKey(creatorID string) string {
	return "count:tips:30d:{" + keyid.Encode(creatorID) + "}"
}

// TipCreated tells the creator about a tip. Enqueued by the API after the
// money moved (the tip row is committed).
type TipCreated struct {
	TipID     int64  `json:"tipId"`
	StreamID  int64  `json:"streamId"`
	CreatorID string `json:"creatorId"`
	Amount    int64  `json:"amount"`
}

// Kind is the job's stable name.
func (TipCreated) Kind() string { return "tips.notify-creator" }

// Validate rejects payloads no retry could fix.
func (a TipCreated) Validate() error {
	if a.TipID <= 0 || a.CreatorID == "" || a.Amount <= 0 {
		return errors.New("tipId, creatorId and a positive amount are required")
	}
	return nil
}

// EnqueueDefaults: one notification per tip, however often the API
// enqueues it (a replayed tip enqueues again, in case the first publish
// was lost).
func (a TipCreated) EnqueueDefaults() []jobs.EnqueueOption {
	return []jobs.EnqueueOption{
		jobs.WithRetries(5),
		jobs.WithDeduplicationID("tip:" + strconv.FormatInt(a.TipID, 10) + ":notify"),
	}
}

// RefreshTipCount recomputes a creator's 30-day tip count and sum from the
// database and writes it to the cache for TipCountTTL.
type RefreshTipCount struct {
	CreatorID string `json:"creatorId"`
	// TipID is the tip that made the count stale; it only deduplicates.
	TipID int64 `json:"tipId,omitempty"`
}

// Kind is the job's stable name.
func (RefreshTipCount) Kind() string { return "tips.refresh-count" }

// Validate rejects payloads no retry could fix.
func (a RefreshTipCount) Validate() error {
	if a.CreatorID == "" {
		return errors.New("creatorId is required")
	}
	return nil
}

// EnqueueDefaults: a few retries (the next tip refreshes it anyway),
// deduplicated per causing tip.
func (a RefreshTipCount) EnqueueDefaults() []jobs.EnqueueOption {
	opts := []jobs.EnqueueOption{jobs.WithRetries(3)}
	if a.TipID > 0 {
		opts = append(opts, jobs.WithDeduplicationID("tip:"+strconv.FormatInt(a.TipID, 10)+":refresh-count"))
	}
	return opts
}

func (d Deps) tipCreated(ctx context.Context, j *jobs.Job[TipCreated]) error {
	a := j.Args
	d.done(ctx, a.Kind(), j.MessageID, "notifying creator of a tip",
		slog.Int64("tip_id", a.TipID), slog.Int64("stream_id", a.StreamID), slog.Int64("amount", a.Amount))
	return nil
}

// refreshTipCount deletes the cached count, then reads through the cache so
// the fresh value is written under the mini-lock (the cache has no plain
// Set: its fenced write is what keeps an older computation from landing
// after a newer one).
func (d Deps) refreshTipCount(ctx context.Context, j *jobs.Job[RefreshTipCount]) error {
	return d.refreshCount(ctx, j.Args.CreatorID)
}

func (d Deps) refreshCount(ctx context.Context, creatorID string) error {
	key := TipCountCacheKey(creatorID)
	if err := d.Cache.Invalidate(ctx, key); err != nil {
		return err
	}
	var outcome cache.Outcome
	stats, err := cache.GetOrCompute(ctx, d.Cache, key, TipCountTTL, func(ctx context.Context) (store.TipStats, error) {
		return d.Store.TipsLast30Days(ctx, creatorID)
	}, cache.WithOutcome(&outcome))
	if err != nil {
		return err
	}
	if outcome == cache.OutcomeDegraded {
		return errors.New("tip count computed but not cached: Redis unavailable") // retry later
	}
	d.Log.DebugContext(ctx, "tip count refreshed",
		"count", stats.Count, "outcome", string(outcome))
	return nil
}

// RefreshTipCounts is the periodic job that keeps the 30-day tip counts of
// the creators tipped lately fresh in the cache, so they also drop the tips
// that age out of the window when no new tip arrives. Declared in Register
// (TipCountsCron) and synced to a QStash schedule by worker -sync-schedules.
type RefreshTipCounts struct {
	// Limit bounds the creators one run refreshes, most recently tipped
	// first. Defaults to MaxRefreshPerRun.
	Limit int `json:"limit,omitempty"`
}

// Kind is the job's stable name.
func (RefreshTipCounts) Kind() string { return "tips.refresh-counts" }

// Validate rejects payloads no retry could fix.
func (a RefreshTipCounts) Validate() error {
	if a.Limit < 0 || a.Limit > MaxRefreshPerRun {
		return errors.New("limit must be 0 to " + strconv.Itoa(MaxRefreshPerRun))
	}
	return nil
}

// EnqueueDefaults: no retries; the next run comes within TipCountsCron's
// period anyway.
func (RefreshTipCounts) EnqueueDefaults() []jobs.EnqueueOption {
	return []jobs.EnqueueOption{jobs.WithRetries(0)}
}

// TipCountsCron runs RefreshTipCounts every TipCountTTL (300 s).
const TipCountsCron = "*/5 * * * *"

// MaxRefreshPerRun bounds one RefreshTipCounts run.
const MaxRefreshPerRun = 1000

func (d Deps) refreshTipCounts(ctx context.Context, j *jobs.Job[RefreshTipCounts]) error {
	limit := j.Args.Limit
	if limit == 0 {
		limit = MaxRefreshPerRun
	}
	ids, err := d.Store.TippedCreators(ctx, limit)
	if err != nil {
		return err
	}
	var failed int
	var last error
	for _, id := range ids {
		if err := d.refreshCount(ctx, id); err != nil {
			failed++
			last = err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	d.done(ctx, j.Args.Kind(), j.MessageID, "tip counts refreshed",
		slog.Int("creators", len(ids)), slog.Int("failed", failed))
	if failed > 0 {
		// Not retried (EnqueueDefaults): the next run is minutes away; the
		// DLQ entry tells an operator.
		return fmt.Errorf("%d of %d tip counts not refreshed: %w", failed, len(ids), last)
	}
	return nil
}
