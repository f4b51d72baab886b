package jobs

import (
	"net/http"
	"strconv"
)

// FailureCallbackPath is where, below the worker's public URL, the worker
// kit (package worker) receives QStash's failure callbacks by default:
// publish with WithFailureCallback(WorkerPublicURL + FailureCallbackPath)
// to have dead jobs recorded.
const FailureCallbackPath = "/qstash/failed"

// Delivery is what QStash says about one delivery attempt, taken from its
// request headers. The worker's route fills it (DeliveryFromHeader) after
// verifying the signature and hands it to Dispatch; handlers see it on Job.
type Delivery struct {
	// MessageID is Upstash-Message-Id: the same on every retry of a message,
	// hence the key for deduplication.
	MessageID string
	// Retried is Upstash-Retried: attempts made before this one (0 on the
	// first attempt).
	Retried int
	// ScheduleID is Upstash-Schedule-Id, set when a schedule created the message.
	ScheduleID string
	// URLGroup is Upstash-Topic-Name, set for URL-group messages.
	URLGroup string
	// Region is Upstash-Region (e.g. "EU-CENTRAL-1"), when QStash sends it.
	Region string
	// Traceparent is the W3C trace context the publisher forwarded (the
	// Traceparent header, via Upstash-Forward-Traceparent), or "" when absent
	// or malformed. Dispatch puts it on the handler's context so jobs
	// enqueued by the handler carry it on.
	Traceparent string
}

// Attempt is the 1-based number of this attempt.
func (d Delivery) Attempt() int { return d.Retried + 1 }

// DeliveryFromHeader reads a Delivery from the headers of a QStash delivery
// request. Call it only after the signature was verified. Missing or
// malformed values are left zero; it never fails, because nothing in these
// headers should stop a verified delivery from running.
func DeliveryFromHeader(h http.Header) Delivery {
	d := Delivery{
		MessageID:  h.Get("Upstash-Message-Id"),
		ScheduleID: h.Get("Upstash-Schedule-Id"),
		URLGroup:   h.Get("Upstash-Topic-Name"),
		Region:     h.Get("Upstash-Region"),
	}
	if n, err := strconv.Atoi(h.Get("Upstash-Retried")); err == nil && n >= 0 {
		d.Retried = n
	}
	if tp := h.Get("Traceparent"); validTraceparent(tp) {
		d.Traceparent = tp
	}
	return d
}
