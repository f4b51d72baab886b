package appjobs

import (
	"context"
	"errors"
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
	d.Log.InfoContext(ctx, "notifying creator of a tip",
		"job", a.Kind(), "message_id", j.MessageID,
		"tip_id", a.TipID, "stream_id", a.StreamID, "amount", a.Amount)
	return nil
}

// refreshTipCount deletes the cached count, then reads through the cache so
// the fresh value is written under the mini-lock (the cache has no plain
// Set: its fenced write is what keeps an older computation from landing
// after a newer one).
func (d Deps) refreshTipCount(ctx context.Context, j *jobs.Job[RefreshTipCount]) error {
	key := TipCountCacheKey(j.Args.CreatorID)
	if err := d.Cache.Invalidate(ctx, key); err != nil {
		return err
	}
	var outcome cache.Outcome
	stats, err := cache.GetOrCompute(ctx, d.Cache, key, TipCountTTL, func(ctx context.Context) (store.TipStats, error) {
		return d.Store.TipsLast30Days(ctx, j.Args.CreatorID)
	}, cache.WithOutcome(&outcome))
	if err != nil {
		return err
	}
	if outcome == cache.OutcomeDegraded {
		return errors.New("tip count computed but not cached: Redis unavailable") // retry later
	}
	d.Log.DebugContext(ctx, "tip count refreshed", "tip_id", j.Args.TipID,
		"count", stats.Count, "outcome", string(outcome))
	return nil
}
