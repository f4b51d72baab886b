package apiapp

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/digis/jobworker/idempotency"
	"github.com/digis/jobworker/internal/appjobs"
	"github.com/digis/jobworker/internal/store"
	"github.com/digis/jobworker/jobs"
	"github.com/digis/jobworker/outbox"
)

// QuickTipRequest is the body of POST /api/tips/quick. Amount is in tokens
// (minor units), a whole number.
type QuickTipRequest struct {
	Amount   *int64 `json:"amount"`
	StreamID *int64 `json:"streamId"`
}

// TipResponse is the answer of a tip. It leaves out the tipper's id: the
// caller knows who they are, and the answer is stored in Redis for replays.
type TipResponse struct {
	ID        int64     `json:"id"`
	StreamID  int64     `json:"streamId"`
	CreatorID string    `json:"creatorId"`
	Amount    int64     `json:"amount"`
	CreatedAt time.Time `json:"createdAt"`
}

func (a *app) quickTip(c echo.Context) error {
	var req QuickTipRequest
	if err := decodeJSON(c, &req); err != nil {
		return err
	}
	switch {
	case req.Amount == nil || req.StreamID == nil:
		return badRequest("amount and streamId are required")
	case *req.Amount <= 0 || *req.Amount > a.tipMax:
		return badRequest("amount must be a whole number of tokens between 1 and " + strconv.FormatInt(a.tipMax, 10))
	case *req.StreamID <= 0:
		return badRequest("streamId must be a positive integer")
	}
	ctx := c.Request().Context()
	key, ok := idempotency.DownstreamKey(ctx)
	if !ok { // the route is wired without the Idempotency-Key middleware
		return errors.New("apiapp: quick tip without an idempotency key")
	}
	tip, err := a.store.Tip(ctx, store.TipRequest{
		TipperID: userID(c), StreamID: *req.StreamID, Amount: *req.Amount, IdempotencyKey: key,
	})
	if err != nil {
		// The tip row and its key commit with the money or not at all, so
		// whatever happened the same key is safe to run again: release it
		// rather than record this answer (see the package doc).
		return idempotency.NoSideEffect(a.storeError(c, err))
	}
	if tip.Replayed {
		// The Redis record was lost; the database remembered the key.
		c.Response().Header().Set(idempotency.HeaderReplayed, "true")
		a.log.InfoContext(ctx, "tip replayed from the database", "tip_id", tip.ID)
	}
	switch {
	case !a.outbox:
		a.publishTipJobs(c, tip)
	case !tip.Replayed:
		a.committed()
	}
	return c.JSON(http.StatusCreated, TipResponse{
		ID: tip.ID, StreamID: tip.StreamID, CreatorID: tip.CreatorID, Amount: tip.Amount, CreatedAt: tip.CreatedAt,
	})
}

// tipJobs are a tip's follow-ups: notify the creator, refresh their 30-day
// count. Both are deduplicated per tip.
func (a *app) tipJobs(tip store.Tip) []jobs.EnqueueRequest {
	cb := jobs.WithFailureCallback(a.failureURL)
	return []jobs.EnqueueRequest{
		{Args: appjobs.TipCreated{TipID: tip.ID, StreamID: tip.StreamID, CreatorID: tip.CreatorID, Amount: tip.Amount}, Options: []jobs.EnqueueOption{cb}},
		{Args: appjobs.RefreshTipCount{CreatorID: tip.CreatorID, TipID: tip.ID}, Options: []jobs.EnqueueOption{cb}},
	}
}

// writeTipJobs is the store's FollowUps.Tip: the follow-ups are written to
// the outbox in the tip's own transaction, so they are published if and only
// if the money moved, whatever happens to this process or to QStash after
// the commit. Both jobs go in one row (outbox.EnqueueBatch): one insert in
// the tip's transaction, one row for the relay to claim, mark and clean up,
// one QStash batch call. A replay writes nothing: the original transaction did. No
// NOTIFY in the transaction (it would serialise every tip's commit, see
// outbox.WithoutNotify): the handler wakes the relays once it committed.
func (a *app) writeTipJobs(ctx context.Context, tx store.Pipeline, tip store.Tip) error {
	if a.rowPerJob {
		_, err := outbox.EnqueueMany(ctx, a.outboxTx(tx), a.tipJobs(tip))
		return err
	}
	_, err := outbox.EnqueueBatch(ctx, a.outboxTx(tx), a.tipJobs(tip))
	return err
}

// publishTipJobs is the dev-only path (the in-memory store has no
// transaction to write them in): publish the follow-ups after the "commit"
// in one QStash call. They are deduplicated per tip, so a replay publishes
// them again harmlessly (and repairs a publish that failed the first time).
// A failure is logged, not answered: the money moved, and an error would
// invite a retry with a new key.
func (a *app) publishTipJobs(c echo.Context, tip store.Tip) {
	ctx, cancel := detached(c.Request().Context(), publishTimeout)
	defer cancel()
	if _, err := a.jobs.EnqueueBatch(ctx, a.tipJobs(tip)); err != nil {
		a.log.ErrorContext(ctx, "could not enqueue the tip's follow-up jobs", "tip_id", tip.ID, "error", err.Error())
	}
}
