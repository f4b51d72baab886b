package apiapp

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/labstack/echo/v4"

	"github.com/digis/jobworker/cache"
	"github.com/digis/jobworker/internal/appjobs"
	"github.com/digis/jobworker/internal/auth"
	"github.com/digis/jobworker/internal/store"
	"github.com/digis/jobworker/jobs"
	"github.com/digis/jobworker/outbox"
)

// publicStatus is the cached part of a stream's status: the same for every
// viewer, ids and public fields only. Found=false caches an unknown
// username (a new stream's first start deletes it).
type publicStatus struct {
	Found     bool       `json:"found"`
	StreamID  int64      `json:"streamId,omitempty"`
	CreatorID string     `json:"creatorId,omitempty"`
	Username  string     `json:"username,omitempty"`
	Title     string     `json:"title,omitempty"`
	Live      bool       `json:"live,omitempty"`
	Viewers   int        `json:"viewers,omitempty"`
	StartedAt *time.Time `json:"startedAt,omitempty"`
}

// StatusResponse is the answer of GET /api/streams/status.
type StatusResponse struct {
	StreamID  int64      `json:"streamId"`
	CreatorID string     `json:"creatorId"`
	Username  string     `json:"username"`
	Title     string     `json:"title"`
	Live      bool       `json:"live"`
	Viewers   int        `json:"viewers"`
	StartedAt *time.Time `json:"startedAt,omitempty"`
	// Viewer is computed per request from the token, never cached.
	Viewer ViewerAccess `json:"viewer"`
}

// ViewerAccess is what the caller may do with the stream.
type ViewerAccess struct {
	Authenticated bool `json:"authenticated"`
	IsCreator     bool `json:"isCreator"`
	// CanTip: signed in, not the creator, and the stream is live. The
	// balance is checked when tipping (402).
	CanTip bool `json:"canTip"`
}

func (a *app) status(c echo.Context) error {
	// The answer depends on who asks: shared caches must key on it, and
	// the public part is already cached here.
	h := c.Response().Header()
	h.Set(echo.HeaderVary, "Cookie, Authorization")
	h.Set(echo.HeaderCacheControl, "private, no-cache")
	username, err := store.NormalizeUsername(c.QueryParam("username"))
	if err != nil {
		return badRequest("username must be 3-30 characters of a-z, 0-9 and _")
	}
	var outcome cache.Outcome
	pub, err := cache.GetOrCompute(c.Request().Context(), a.cache, appjobs.StatusCacheKey(username), a.statusTTL,
		func(ctx context.Context) (publicStatus, error) {
			st, err := a.store.StreamByUsername(ctx, username)
			if errors.Is(err, store.ErrNotFound) {
				return publicStatus{}, nil
			}
			if err != nil {
				return publicStatus{}, err
			}
			return publicStatus{
				Found: true, StreamID: st.ID, CreatorID: st.CreatorID, Username: st.Username,
				Title: st.Title, Live: st.Live, Viewers: st.Viewers, StartedAt: st.StartedAt,
			}, nil
		}, cache.WithOutcome(&outcome))
	h.Set("X-Cache", string(outcome))
	if err != nil {
		return a.storeError(c, err)
	}
	if !pub.Found {
		return echo.NewHTTPError(http.StatusNotFound, "no such stream")
	}
	viewer, signedIn := auth.UserID(c)
	isCreator := signedIn && viewer == pub.CreatorID
	return c.JSON(http.StatusOK, StatusResponse{
		StreamID: pub.StreamID, CreatorID: pub.CreatorID, Username: pub.Username, Title: pub.Title,
		Live: pub.Live, Viewers: pub.Viewers, StartedAt: pub.StartedAt,
		Viewer: ViewerAccess{Authenticated: signedIn, IsCreator: isCreator, CanTip: signedIn && !isCreator && pub.Live},
	})
}

// StartRequest is the body of POST /api/streams/start.
type StartRequest struct {
	Username string `json:"username"`
	Title    string `json:"title"`
}

// StopRequest is the body of POST /api/streams/stop.
type StopRequest struct {
	StreamID int64 `json:"streamId"`
}

func (a *app) start(c echo.Context) error {
	var req StartRequest
	if err := decodeJSON(c, &req); err != nil {
		return err
	}
	st, err := a.store.StartStream(c.Request().Context(), store.StartStreamRequest{
		CreatorID: userID(c), Username: req.Username, Title: req.Title,
	})
	if err != nil {
		return a.storeError(c, err)
	}
	return a.changed(c, st)
}

func (a *app) stop(c echo.Context) error {
	var req StopRequest
	if err := decodeJSON(c, &req); err != nil {
		return err
	}
	if req.StreamID <= 0 {
		return badRequest("streamId must be a positive integer")
	}
	st, err := a.store.StopStream(c.Request().Context(), userID(c), req.StreamID)
	if err != nil {
		return a.storeError(c, err)
	}
	return a.changed(c, st)
}

// streamJob is the follow-up of a start or stop, deduplicated per
// broadcast and state.
func streamJob(st store.Stream) appjobs.StreamStatusChanged {
	at := st.EndedAt
	if st.Live {
		at = st.StartedAt
	}
	job := appjobs.StreamStatusChanged{StreamID: st.ID, CreatorID: st.CreatorID, Username: st.Username, Live: st.Live}
	if at != nil {
		job.ChangedAt = *at
	}
	return job
}

// writeStreamJob is the store's FollowUps.StreamChange: the follow-up is
// written to the outbox in the transaction that put the stream live or
// ended it.
func (a *app) writeStreamJob(ctx context.Context, tx pgx.Tx, st store.Stream) error {
	_, err := outbox.Enqueue(ctx, a.outboxTx(tx), streamJob(st), jobs.WithFailureCallback(a.failureURL))
	return err
}

// changed runs after a start or stop was committed: delete the status key
// now, so the next read on any instance sees the change. The follow-up job
// was committed with the change; on the dev path (no outbox) it is
// published here, and a failure answers 503 so the client retries the
// idempotent request.
func (a *app) changed(c echo.Context, st store.Stream) error {
	ctx, cancel := detached(c.Request().Context(), publishTimeout)
	defer cancel()
	if err := a.cache.Invalidate(ctx, appjobs.StatusCacheKey(st.Username)); err != nil {
		// The job deletes the key again; until then readers may see the
		// old status for at most the status TTL.
		a.log.WarnContext(ctx, "status invalidation failed; the follow-up job retries it",
			"stream_id", st.ID, "error", err.Error())
	}
	if a.outbox {
		// Woken even when the change wrote no job (a retry): it costs the
		// relay one look.
		a.committed()
		return c.JSON(http.StatusOK, st)
	}
	job := streamJob(st)
	if _, err := a.jobs.Enqueue(ctx, job, jobs.WithFailureCallback(a.failureURL)); err != nil {
		a.log.ErrorContext(ctx, "could not enqueue the stream follow-up job", "job", job.Kind(),
			"stream_id", st.ID, "error", err.Error())
		c.Response().Header().Set(echo.HeaderRetryAfter, "2")
		return echo.NewHTTPError(http.StatusServiceUnavailable,
			"the change is saved but its follow-up could not be queued; retry the same request")
	}
	return c.JSON(http.StatusOK, st)
}
