package webhooks

import (
	"encoding/base64"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/url"
	"strings"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/digis/jobworker/internal/problem"
	"github.com/digis/jobworker/jobs"
)

// FailureCallbackConfig configures the handler for QStash failure callbacks:
// QStash calls it once when a message has exhausted its retries (or was
// answered 489) and sits in the DLQ. The handler records the dead job in
// the log and in jobworker_dead_jobs_total{job}, so operators find it
// without polling the DLQ. Mount it behind VerifyQStash: callbacks are
// signed like any delivery.
type FailureCallbackConfig struct {
	// Registry, if set, bounds the job label to registered names.
	Registry *jobs.Registry
	// Logger receives one error line per dead job. Defaults to discarding.
	Logger *slog.Logger
	// Registerer receives jobworker_dead_jobs_total. Defaults to nil.
	Registerer prometheus.Registerer
}

// failureCallback is the part of QStash's callback body (protocol notes
// §2.5) an operator needs. Everything else, headers and the original body
// included, is left unread: it may carry personal data.
type failureCallback struct {
	Status          int    `json:"status"`
	Body            string `json:"body"` // standard base64 of the last response body
	Retried         int    `json:"retried"`
	MaxRetries      int    `json:"maxRetries"`
	DLQID           string `json:"dlqId"`
	SourceMessageID string `json:"sourceMessageId"`
	URL             string `json:"url"`
}

// maxReasonBytes bounds the last response body quoted in the log.
const maxReasonBytes = 300

// Handler returns the failure-callback handler.
func (cfg FailureCallbackConfig) Handler() (echo.HandlerFunc, error) {
	dead := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "jobworker_dead_jobs_total",
		Help: "Jobs QStash gave up on (failure callbacks received), by job.",
	}, []string{"job"})
	if cfg.Registerer != nil {
		var err error
		if dead, err = register(cfg.Registerer, dead); err != nil {
			return nil, err
		}
	}
	log := discardIfNil(cfg.Logger)
	return func(c echo.Context) error {
		if _, ok := QStashClaimsFrom(c); !ok {
			return problem.Respond(c, http.StatusUnauthorized, "")
		}
		var fc failureCallback
		dec := json.NewDecoder(c.Request().Body)
		if err := dec.Decode(&fc); err != nil || fc.SourceMessageID == "" {
			// Retrying cannot fix a body QStash itself produced wrongly.
			c.Response().Header().Set(jobs.HeaderNonRetryable, "true")
			return problem.Respond(c, jobs.StatusNonRetryable, "not a QStash failure callback")
		}
		name := jobName(fc.URL)
		label := name
		if !knownJob(cfg.Registry, name) {
			label = "_unknown"
		}
		dead.WithLabelValues(label).Inc()
		log.ErrorContext(c.Request().Context(), "job dead-lettered",
			"job", name, "message_id", fc.SourceMessageID, "dlq_id", fc.DLQID,
			"last_status", fc.Status, "retried", fc.Retried, "max_retries", fc.MaxRetries,
			"reason", reason(fc.Body))
		return c.JSON(http.StatusOK, map[string]string{"status": "recorded"})
	}, nil
}

// knownJob bounds metric labels: registered names only, or valid names
// when there is no registry to ask.
func knownJob(r *jobs.Registry, name string) bool {
	if r == nil {
		return jobs.ValidateName(name) == nil
	}
	_, ok := r.Timeout(name)
	return ok
}

// jobName extracts the job name from a destination .../jobs/<name>.
func jobName(dest string) string {
	u, err := url.Parse(dest)
	if err != nil {
		return ""
	}
	i := strings.LastIndex(u.Path, jobs.PathPrefix)
	if i < 0 {
		return ""
	}
	return u.Path[i+len(jobs.PathPrefix):]
}

// reason is the last response body, decoded, made printable and cut short.
// The worker writes these bodies itself (problem details without internal
// detail), so they are safe to log.
func reason(b64 string) string {
	raw, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return ""
	}
	if len(raw) > maxReasonBytes {
		raw = raw[:maxReasonBytes]
	}
	s := strings.ToValidUTF8(string(raw), "")
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	return s
}
