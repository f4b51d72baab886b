package worker

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"

	"github.com/digis/jobworker/idempotency"
	"github.com/digis/jobworker/internal/keyid"
	"github.com/digis/jobworker/internal/problem"
	"github.com/digis/jobworker/jobs"
	"github.com/digis/jobworker/webhooks"
)

// failureCallback is the part of QStash's failure-callback body an operator
// needs (docs/qstash-protocol.md §8.2). Everything else, headers and
// the original body included, is left unread: it may carry personal data.
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

// failureTag is the hash tag of failure-callback records: it cannot be a
// job name (those start with a letter), so the two never share a key.
const failureTag = "_failed"

// serveFailureCallback records a dead job once: QStash calls it when a
// message has exhausted its retries (or was answered 489) and sits in the
// DLQ. The record is the log line and jobworker_dead_jobs_total{job}, so it
// is deduplicated by the DLQ id (QStash's own retries of the callback and
// replays of it count once) and the callback's token is accepted once.
func (h *Handler) serveFailureCallback(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	if h.cfg.Draining() {
		w.Header().Set("Retry-After", seconds(h.cfg.Backoff(jobs.DeliveryFromHeader(r.Header).Retried)))
		problem.Send(w, http.StatusServiceUnavailable, "shutting down, retry later")
		return
	}
	claims, body, err := h.verifier.VerifyRequest(r, h.base, h.cfg.MaxBodyBytes)
	if err != nil {
		status := http.StatusUnauthorized
		if webhooks.CheckOf(err) == webhooks.CheckBodyTooLarge {
			status = http.StatusRequestEntityTooLarge
		}
		problem.Send(w, status, "")
		return
	}
	var fc failureCallback
	if err := json.Unmarshal(body, &fc); err != nil || fc.SourceMessageID == "" || len(fc.DLQID) > maxMessageID {
		// Retrying cannot fix a body QStash itself produced wrongly.
		w.Header().Set(jobs.HeaderNonRetryable, "true")
		problem.Send(w, jobs.StatusNonRetryable, "not a QStash failure callback")
		return
	}
	// keyid never yields ':', so a DLQ id cannot spell "msg:<id>".
	id := keyid.Encode(fc.DLQID)
	if fc.DLQID == "" { // older callbacks: one per source message
		id = "msg:" + keyid.Encode(fc.SourceMessageID)
	}
	acq, err := h.dedupe.Acquire(context.WithoutCancel(ctx), "{"+failureTag+"}:"+id, "", h.nonce(claims))
	switch {
	case errors.Is(err, idempotency.ErrNonceReused):
		h.log.WarnContext(ctx, "failure callback token replayed; refused", "dlq_id", fc.DLQID)
		problem.Send(w, http.StatusUnauthorized, "")
		return
	case err != nil:
		w.Header().Set("Retry-After", seconds(h.cfg.Backoff(jobs.DeliveryFromHeader(r.Header).Retried)))
		problem.Send(w, http.StatusServiceUnavailable, "temporarily unavailable")
		return
	case acq.Outcome != idempotency.Acquired:
		writeJSON(w, http.StatusOK, answerRecorded) // already recorded (or being recorded)
		return
	}
	name := jobNameOf(fc.URL)
	label := name
	if _, ok := h.cfg.Registry.Timeout(name); !ok {
		label = unknownLabel
	}
	h.m.dead.WithLabelValues(label).Inc()
	h.log.ErrorContext(ctx, "job dead-lettered",
		"job", name, "message_id", fc.SourceMessageID, "dlq_id", fc.DLQID,
		"last_status", fc.Status, "retried", fc.Retried, "max_retries", fc.MaxRetries,
		"reason", reason(fc.Body))
	if err := acq.Lease.Complete(context.WithoutCancel(ctx), nil); err != nil {
		h.log.WarnContext(ctx, "dead job recorded but not marked; a replay of its callback may count it again",
			"dlq_id", fc.DLQID, "error", err.Error())
	}
	writeJSON(w, http.StatusOK, answerRecorded)
}

var answerRecorded = []byte(`{"status":"recorded"}`)

// jobNameOf extracts the job name from a destination .../jobs/<name>.
func jobNameOf(dest string) string {
	u, err := url.Parse(dest)
	if err != nil {
		return ""
	}
	name, _ := jobName(u.Path)
	return name
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
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
}
