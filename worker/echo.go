package worker

import (
	"github.com/labstack/echo/v4"

	"github.com/digis/jobworker/jobs"
)

// Router is where Mount adds the worker's routes: *echo.Echo and
// *echo.Group both fit.
type Router interface {
	POST(path string, h echo.HandlerFunc, m ...echo.MiddlewareFunc) *echo.Route
}

// Mount adds POST /jobs/:name and POST FailureCallbackPath to an Echo app
// or group. The handler reads the job name from the path itself, so any
// group prefix works; the signature is checked against PublicURL + the
// request path, so on a group "/hooks" the jobs client publishes to
// WorkerPublicURL = PublicURL + "/hooks". Middleware that rewrites bodies
// (Decompress) must not run before it: the signature covers the bytes as
// received.
func (h *Handler) Mount(r Router, m ...echo.MiddlewareFunc) {
	serve := echo.WrapHandler(h)
	r.POST(jobs.PathPrefix+":name", serve, m...)
	r.POST(h.cfg.FailureCallbackPath, serve, m...)
}
