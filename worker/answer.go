package worker

import (
	"errors"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/digis/jobworker/internal/problem"
	"github.com/digis/jobworker/jobs"
)

// answer is the one place a delivery result becomes an HTTP answer. What
// each answer makes QStash do:
//
//	done, or the message already did          200: stops (never 409 for a finished job)
//	same message running elsewhere            409 + Retry-After: retries later
//	handler error (lease released)            500 (+ Retry-After if jobs.RetryAfter): retries with its backoff
//	panic in the handler (lease released)     500, stack in the log: retries
//	permanent: bad payload, unknown job,
//	  jobs.Permanent, id ran with another body 489 + Upstash-NonRetryable-Error: DLQ at once
//	Redis unavailable, or worker draining     503 + Retry-After from Backoff: retries, slowly
//	signature invalid, token replayed         401: retries, then DLQ (a forgery never runs)
//	body above MaxBodyBytes                   413
func (h *Handler) answer(w http.ResponseWriter, d jobs.Delivery, r result) {
	hdr := w.Header()
	switch r.outcome {
	case outcomeDone:
		writeJSON(w, http.StatusOK, answerDone)
		return
	case outcomeDuplicate:
		writeJSON(w, http.StatusOK, answerDuplicate)
		return
	case outcomeUnverified, outcomeReplayed:
		closeUnread(w, r)
		problem.Send(w, http.StatusUnauthorized, "")
		return
	case outcomeTooLarge:
		closeUnread(w, r)
		problem.Send(w, http.StatusRequestEntityTooLarge, "")
		return
	case outcomeInProgress:
		hdr.Set("Retry-After", seconds(max(r.retryAfter, h.cfg.Backoff(d.Retried))))
		problem.Send(w, http.StatusConflict, "this message is being processed by another worker")
		return
	case outcomeUnavailable:
		hdr.Set("Retry-After", seconds(h.cfg.Backoff(d.Retried)))
		problem.Send(w, http.StatusServiceUnavailable, "temporarily unavailable")
		return
	case outcomeDraining:
		hdr.Set("Retry-After", seconds(h.cfg.Backoff(d.Retried)))
		problem.Send(w, http.StatusServiceUnavailable, "shutting down, retry later")
		return
	}
	if jobs.IsPermanent(r.err) {
		hdr.Set(jobs.HeaderNonRetryable, "true")
		detail := "job failed permanently"
		switch r.outcome {
		case outcomeUnknownJob:
			detail = "unknown job"
		case outcomeMismatch:
			detail = "this message id already ran with another body"
		default:
			if errors.Is(r.err, jobs.ErrBadPayload) {
				detail = "bad payload"
			}
		}
		problem.Send(w, jobs.StatusNonRetryable, detail)
		return
	}
	if after, ok := jobs.RetryAfterOf(r.err); ok {
		hdr.Set("Retry-After", strconv.FormatInt(int64(math.Ceil(after.Seconds())), 10))
	}
	problem.Send(w, http.StatusInternalServerError, "job failed; it will be retried")
}

// closeUnread closes the connection after a refusal that may have left the
// body unread (a token refused before its body, a body above the cap):
// net/http would otherwise read up to 256 KiB of it, at the sender's pace,
// before sending the answer. QStash's own deliveries are never refused so.
func closeUnread(w http.ResponseWriter, r result) {
	if r.outcome != outcomeReplayed {
		w.Header().Set("Connection", "close")
	}
}

// The 200 bodies, encoded once.
var (
	answerDone      = []byte(`{"status":"done"}`)
	answerDuplicate = []byte(`{"status":"duplicate"}`)
)

func writeJSON(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// seconds renders a Retry-After value: whole seconds, rounded up, at least
// 1, at most what QStash honours (jobs.MaxRetryAfter).
func seconds(d time.Duration) string {
	s := int64(math.Ceil(min(d, jobs.MaxRetryAfter).Seconds()))
	return strconv.FormatInt(max(s, 1), 10)
}

// QStashBackoff is QStash's default wait before retry n+1 of a message that
// has been retried n times: min(24 h, e^(2.5·(n+1))) seconds, i.e. 12 s,
// 2 min 28 s, 30 min 8 s, 6 h 7 min, then 24 h. Sending it as Retry-After
// keeps a message published with a short custom retry delay from spending
// all its retries during one outage.
func QStashBackoff(retried int) time.Duration {
	s := math.Exp(2.5 * float64(max(retried, 0)+1))
	return time.Duration(min(s, jobs.MaxRetryAfter.Seconds()) * float64(time.Second))
}
