package appjobs

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"time"

	"github.com/digis/jobworker/internal/keyid"
	"github.com/digis/jobworker/internal/store"
	"github.com/digis/jobworker/jobs"
)

// StatusCacheKey is the cache key of a stream's public status, stored in
// Redis as <prefix>cache:status:{username}. Usernames are public handles
// (3-30 of [a-z0-9_], see store.NormalizeUsername), so the key names the
// channel, never a viewer, and keyid keeps them as they are; the braces make
// it its own Cluster hash tag.
func StatusCacheKey(username string) string { return "status:{" + keyid.Encode(username) + "}" }

// StreamStatusChanged is enqueued by the API after a stream starts or stops
// (the status cache key is already deleted by then). The worker does the
// follow-up work: invalidate derived keys again, so a status computed from
// the old row while the API's delete ran cannot survive, and notify the
// creator's followers.
type StreamStatusChanged struct {
	StreamID  int64  `json:"streamId"`
	CreatorID string `json:"creatorId"`
	// Username is the stream's public handle: the status cache key.
	Username string `json:"username"`
	Live     bool   `json:"live"`
	// ChangedAt is the stream's startedAt (Live) or endedAt: it makes the
	// deduplication id, so a retried start or stop of the same broadcast
	// does not notify twice.
	ChangedAt time.Time `json:"changedAt"`
}

// Kind is the job's stable name.
func (StreamStatusChanged) Kind() string { return "streams.notify-followers" }

// Validate rejects payloads no retry could fix.
func (a StreamStatusChanged) Validate() error {
	if a.StreamID <= 0 || a.CreatorID == "" {
		return errors.New("streamId and creatorId are required")
	}
	if _, err := store.NormalizeUsername(a.Username); err != nil {
		return errors.New("username is not a valid handle")
	}
	return nil
}

// EnqueueDefaults: five retries (notifications matter but are not money),
// deduplicated per stream, state and instant of the change.
func (a StreamStatusChanged) EnqueueDefaults() []jobs.EnqueueOption {
	state := "ended"
	if a.Live {
		state = "live"
	}
	return []jobs.EnqueueOption{
		jobs.WithRetries(5),
		jobs.WithDeduplicationID("stream:" + strconv.FormatInt(a.StreamID, 10) + ":" + state + ":" +
			strconv.FormatInt(a.ChangedAt.UnixNano(), 10)),
	}
}

// streamStatusChanged invalidates the status key and notifies followers.
// There is no follower table in the reference schema: the notification is
// a structured log line with ids only, the place a push or e-mail fan-out
// (itself a batch of jobs) would go.
func (d Deps) streamStatusChanged(ctx context.Context, j *jobs.Job[StreamStatusChanged]) error {
	a := j.Args
	if err := d.Cache.Invalidate(ctx, StatusCacheKey(a.Username)); err != nil {
		return err // transient: QStash retries
	}
	d.done(ctx, a.Kind(), j.MessageID, "notifying followers",
		slog.Int64("stream_id", a.StreamID), slog.Bool("live", a.Live))
	return nil
}

// registerStreamsAndTips adds the handlers of the jobs the API enqueues
// (streams.go, tips.go). Store and Cache are required: without them every
// delivery could only fail.
func registerStreamsAndTips(reg *jobs.Registry, d Deps) error {
	if d.Store == nil || d.Cache == nil {
		return errors.New("appjobs: Deps.Store and Deps.Cache are required")
	}
	if d.Log == nil {
		d.Log = slog.New(slog.DiscardHandler)
	}
	return errors.Join(
		jobs.Register(reg, d.streamStatusChanged),
		jobs.Register(reg, d.tipCreated),
		jobs.Register(reg, d.refreshTipCount),
		jobs.Register(reg, d.refreshTipCounts, jobs.WithHandlerTimeout(2*time.Minute)),
		addPeriodic(reg),
	)
}

func addPeriodic(reg *jobs.Registry) error {
	var errs []error
	for _, p := range Periodic() {
		errs = append(errs, reg.AddPeriodic(p))
	}
	return errors.Join(errs...)
}

// Periodic lists the reference application's periodic jobs, the schedules
// worker -sync-schedules and jobctl schedules keep in QStash. Register
// declares them next to their handlers.
func Periodic() []jobs.Periodic {
	return []jobs.Periodic{
		{Cron: TipCountsCron, Args: RefreshTipCounts{}},
	}
}
