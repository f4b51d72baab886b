package worker

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"time"

	"github.com/digis/jobworker/idempotency"
	"github.com/digis/jobworker/internal/keyid"
	"github.com/digis/jobworker/internal/reqlog"
	"github.com/digis/jobworker/jobs"
	"github.com/digis/jobworker/webhooks"
)

// Delivery outcomes, the values of the outcome label of
// jobworker_deliveries_total.
const (
	outcomeDone        = "done"        // the job ran and succeeded
	outcomeDuplicate   = "duplicate"   // the message already ran
	outcomeInProgress  = "in_progress" // the message runs elsewhere
	outcomeRetry       = "retry"       // the job failed; QStash retries
	outcomePanic       = "panic"       // the job panicked; QStash retries
	outcomePermanent   = "permanent"   // the job failed for good (489)
	outcomeUnknownJob  = "unknown_job" // no handler of that name (489)
	outcomeMismatch    = "mismatch"    // the message id ran with another body (489)
	outcomeUnavailable = "unavailable" // Redis did not answer; nothing ran
	outcomeDraining    = "draining"    // shutting down; nothing ran
	outcomeUnverified  = "unverified"  // the signature check failed
	outcomeTooLarge    = "too_large"   // the body is above MaxBodyBytes
	outcomeReplayed    = "replayed"    // a token already used for another message
)

// result is what happened to one delivery; answer turns it into HTTP.
type result struct {
	outcome    string
	err        error         // the handler's error for retry/panic/permanent
	retryAfter time.Duration // in_progress: when the other holder's lease ends at the latest
}

func (h *Handler) serveJob(w http.ResponseWriter, r *http.Request, name string) {
	start := time.Now()
	d := jobs.DeliveryFromHeader(r.Header)
	_, known := h.cfg.Registry.Timeout(name)
	label := name
	if !known {
		label = unknownLabel // caller-chosen text is never a label value
	}
	res := h.deliver(r, name, known, d)
	m := h.m.forJob(label)
	m.count(h.m, label, res.outcome)
	m.duration.Observe(time.Since(start).Seconds())
	if d.Retried > 0 {
		m.redeliv.Inc()
	}
	h.logResult(r.Context(), name, d, res)
	h.answer(w, d, res)
}

// maxMessageID bounds Upstash-Message-Id (unsigned, so caller-controlled
// until proven otherwise); QStash's are about 30 characters.
const maxMessageID = 256

func (h *Handler) deliver(r *http.Request, name string, known bool, d jobs.Delivery) result {
	if h.cfg.Draining() {
		return result{outcome: outcomeDraining}
	}
	claims, body, err := h.verifier.VerifyRequest(r, h.base, h.cfg.MaxBodyBytes)
	if err != nil {
		if webhooks.CheckOf(err) == webhooks.CheckBodyTooLarge {
			return result{outcome: outcomeTooLarge}
		}
		return result{outcome: outcomeUnverified}
	}
	if !known {
		return result{outcome: outcomeUnknownJob, err: jobs.Permanent(jobs.ErrUnknownJob)}
	}
	if d.MessageID == "" || len(d.MessageID) > maxMessageID {
		// Every QStash delivery carries one; without it nothing can dedupe.
		return result{outcome: outcomePermanent, err: jobs.Permanent(errors.New("missing or oversized Upstash-Message-Id"))}
	}

	// The job runs to completion even if QStash hangs up (its timeout) or
	// the server begins shutting down: finishing and recording it is what
	// stops the retry from running it again. The job's own timeout bounds it.
	ctx := context.WithoutCancel(r.Context())
	acq, err := h.dedupe.Acquire(ctx, dedupeKey(name, d.MessageID), claims.BodyHash, h.nonce(claims))
	switch {
	case errors.Is(err, idempotency.ErrNonceReused):
		return result{outcome: outcomeReplayed}
	case errors.Is(err, idempotency.ErrFingerprintMismatch):
		if acq.Outcome == idempotency.InProgress {
			// The other body may yet fail and release the id: try later.
			return result{outcome: outcomeInProgress, retryAfter: max(h.cfg.InProgressRetryAfter, acq.TTL)}
		}
		// The id already ran with another body, which only a replayed token
		// can have caused. Neither is run again here: the dead-letter queue
		// shows this one to an operator, who can retry it as a new message.
		return result{outcome: outcomeMismatch, err: jobs.Permanent(errors.New("message id already ran with another body"))}
	case err != nil:
		return result{outcome: outcomeUnavailable, err: err}
	case acq.Outcome == idempotency.Done:
		return result{outcome: outcomeDuplicate}
	case acq.Outcome == idempotency.InProgress:
		// Not before the holder's lease could have lapsed: if it died, the
		// retry finds the key free; if it lives, it renews and we answer again.
		return result{outcome: outcomeInProgress, retryAfter: max(h.cfg.InProgressRetryAfter, acq.TTL)}
	}

	lease := acq.Lease
	runCtx, stop := lease.KeepAlive(ctx)
	runErr := h.cfg.Registry.Dispatch(runCtx, name, d, body)
	lost := stop()
	if runErr != nil {
		// Free the key so QStash's retry (or a DLQ retry after a permanent
		// failure) runs the job again. A release Redis does not answer is
		// finished in the background by the store.
		if err := lease.Release(ctx); err != nil && !errors.Is(err, idempotency.ErrLeaseLost) {
			h.log.Warn("releasing delivery lease failed; retrying in the background",
				"job", name, "message_id", d.MessageID, "error", err.Error())
		}
		var pe *jobs.PanicError
		switch {
		case errors.As(runErr, &pe):
			return result{outcome: outcomePanic, err: runErr}
		case jobs.IsPermanent(runErr):
			return result{outcome: outcomePermanent, err: runErr}
		default:
			return result{outcome: outcomeRetry, err: runErr}
		}
	}
	// The work is done; answering 200 stops QStash's retries, so the answer
	// does not wait for the done marker: it leaves with the next delivery's
	// claim (one round trip per delivery under load), or on its own within
	// milliseconds. The lease holds the message meanwhile, so a duplicate
	// gets 409 and comes back to find it done. When Redis does not take it,
	// the store keeps trying in the background; until it lands, a duplicate
	// delivery is absorbed by the handler's own unique constraints.
	lease.CompleteAsync(nil, func(err error) {
		if err != nil {
			h.log.Error("job succeeded but its done marker was not stored yet",
				"job", name, "message_id", d.MessageID, "error", err.Error(), "lease_lost", lost != nil)
		}
	})
	return result{outcome: outcomeDone}
}

// dedupeKey scopes a message id by its job and makes the job the Redis
// Cluster hash tag: a token signed for one job's URL can never touch another
// job's records, and its nonce (keyed by the same tag) is checked in the
// same script. All of one job's records share a slot.
// The message id is unsigned, so it is encoded by keyid: no id can fake
// another's key.
func dedupeKey(name, messageID string) string { return "{" + name + "}:" + keyid.Encode(messageID) }

// nonce records the token's jti until the verifier would refuse the token
// anyway, so a captured delivery cannot be replayed with another message id.
func (h *Handler) nonce(c webhooks.QStashClaims) idempotency.AcquireOption {
	jti := keyid.Encode(c.ID)
	ttl := max(time.Until(c.Expires.Add(h.verifier.Skew())), time.Second)
	return idempotency.WithNonce(jti, ttl)
}

func (h *Handler) logResult(ctx context.Context, name string, d jobs.Delivery, r result) {
	// The request's access line (package server) carries every delivery's
	// job, message id and outcome: the common outcomes need no line of
	// their own. Failures still get one, with what an operator needs.
	carried := reqlog.Add(ctx, slog.String("job", name), slog.String("message_id", d.MessageID),
		slog.Int("retried", d.Retried), slog.String("outcome", r.outcome))
	switch r.outcome {
	case outcomeDone, outcomeDuplicate, outcomeInProgress, outcomeDraining:
		if carried {
			return
		}
	}
	if r.outcome == outcomeDone && !h.log.Enabled(ctx, slog.LevelDebug) {
		return // the common case: no line, so build no attributes either
	}
	attrs := []any{"job", name, "message_id", d.MessageID, "retried", d.Retried, "outcome", r.outcome}
	if r.err != nil {
		attrs = append(attrs, "error", r.err.Error())
	}
	switch r.outcome {
	case outcomeDone:
		h.log.DebugContext(ctx, "job done", attrs...)
	case outcomeDuplicate, outcomeInProgress:
		h.log.InfoContext(ctx, "duplicate delivery", attrs...)
	case outcomeDraining:
		h.log.InfoContext(ctx, "delivery refused while draining", attrs...)
	case outcomeUnverified, outcomeTooLarge:
		// The verifier logged the failed check; the claimed ids are not
		// worth repeating.
	case outcomeReplayed:
		h.log.WarnContext(ctx, "delivery token replayed for another message; refused", attrs...)
	case outcomeMismatch:
		h.log.ErrorContext(ctx, "message id already ran with another body; dead-lettered for an operator", attrs...)
	case outcomePanic:
		var pe *jobs.PanicError
		if errors.As(r.err, &pe) {
			attrs = append(attrs, "stack", string(pe.Stack))
		}
		h.log.ErrorContext(ctx, "job panicked", attrs...)
	default:
		h.log.WarnContext(ctx, "job failed", attrs...)
	}
}
