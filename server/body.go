package server

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/digis/jobworker/internal/reqlog"
)

// admit is the innermost shared middleware: it lets a request in. In one
// new context and one copy of the request it gives the request its
// deadline (timeout from now), its log line (see reqlog; when the access
// line is logged at all) and a guarded body. A handler's error that is the
// deadline passing becomes 503, as Echo's ContextTimeout answered.
//
// The guard bounds what a body may cost before any handler runs:
//
//   - a declared Content-Length above max is answered 413 at once;
//   - the body reads through http.MaxBytesReader, so a longer (chunked or
//     lying) body fails with *http.MaxBytesError, which every reader here
//     and the error handler turn into 413;
//   - the connection's read deadline is set to the request's deadline, so
//     a client dripping its body cannot hold a connection and a goroutine
//     past it (ReadHeaderTimeout covers only the headers); it is cleared
//     once the body is read to its end, so a long handler is not cut off;
//   - an answer sent before the body was read to its end (a 401, a 413)
//     carries Connection: close, and once the handler returns the read
//     deadline is cut to unreadBodyGrace. net/http writes the answer first
//     and then reads what is left of the body (up to 256 KiB), or, for a
//     longer one, half-closes and waits before closing: either way a
//     client still sending gets the answer, not a reset. The grace bounds
//     what a client dripping its body can hold after the answer.
func admit(max int64, timeout time.Duration, log *slog.Logger) echo.MiddlewareFunc {
	h := log.Handler()
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			req := c.Request()
			var guarded *guardedBody
			if req.Body != nil && req.Body != http.NoBody {
				res := c.Response()
				rc := http.NewResponseController(res)
				guarded = &guardedBody{
					ReadCloser: http.MaxBytesReader(res.Writer, req.Body, max),
					declared:   req.ContentLength,
					rc:         rc,
				}
				res.Before(func() {
					if !guarded.finished() {
						res.Header().Set(echo.HeaderConnection, "close")
					}
				})
				// Cut the deadline only after the error, if any, is
				// answered: accessLog renders it after this returns, into
				// the response buffer, which the read deadline does not
				// affect.
				defer func() {
					if !guarded.finished() {
						_ = rc.SetReadDeadline(time.Now().Add(min(unreadBodyGrace, timeout)))
					}
				}()
				if req.ContentLength > max {
					return echo.ErrStatusRequestEntityTooLarge
				}
				// Not every ResponseWriter supports deadlines (httptest's
				// recorder does not); the limit still applies.
				_ = rc.SetReadDeadline(time.Now().Add(timeout))
			}
			ctx := req.Context()
			if h.Enabled(ctx, slog.LevelInfo) {
				// Below info (LOG_LEVEL=warn) no line would carry what
				// handlers add: AddLogAttrs says so and costs nothing.
				ctx, _ = reqlog.New(ctx)
			}
			ctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			// The copy carries the guarded body: net/http decides how to
			// close the connection by the type of the body it gave the
			// handler, so its own request keeps that body.
			req = req.WithContext(ctx)
			if guarded != nil {
				req.Body = guarded
			}
			c.SetRequest(req)
			err := next(c)
			if err != nil && errors.Is(err, context.DeadlineExceeded) {
				return echo.ErrServiceUnavailable.WithInternal(err)
			}
			return err
		}
	}
}

// unreadBodyGrace is how long the rest of a refused body may keep arriving
// after the answer: enough for a client on any sane link to finish sending
// what it had in flight, too short to be worth dripping.
const unreadBodyGrace = 250 * time.Millisecond

// guardedBody notes when the body has been read to its end.
type guardedBody struct {
	io.ReadCloser
	declared int64 // Content-Length, -1 when unknown (chunked)
	rc       *http.ResponseController
	read     int64
	done     atomic.Bool
}

func (b *guardedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.read += int64(n)
	if errors.Is(err, io.EOF) || (b.declared >= 0 && b.read >= b.declared) {
		if !b.done.Swap(true) {
			// The body is in: the rest of the request is the handler's
			// business, bounded by its context.
			_ = b.rc.SetReadDeadline(time.Time{})
		}
	}
	return n, err
}

func (b *guardedBody) finished() bool { return b.done.Load() }

// LimitBody caps the bodies of the routes it wraps at n bytes, below the
// server's BodyLimit: a declared Content-Length above n is answered 413 at
// once, and a longer body (chunked, or lying) fails its read with
// *http.MaxBytesError, which the server answers 413 when a handler returns
// it. Prefer it to Echo's BodyLimit middleware, whose error a JSON decoder
// reports as a 400.
func LimitBody(n int64) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			req := c.Request()
			if req.Body == nil || req.Body == http.NoBody {
				return next(c)
			}
			if req.ContentLength > n {
				return echo.ErrStatusRequestEntityTooLarge
			}
			req.Body = http.MaxBytesReader(c.Response().Writer, req.Body, n)
			return next(c)
		}
	}
}
