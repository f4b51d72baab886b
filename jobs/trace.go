package jobs

import "context"

type traceparentKey struct{}

// WithTraceparent returns a context carrying a W3C traceparent
// ("00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>"). Enqueue forwards
// it to the job's delivery (Upstash-Forward-Traceparent → Traceparent), so a
// job's trace joins the request that enqueued it. A malformed value is
// ignored (ctx is returned unchanged): a broken header must not be spread.
//
// With OpenTelemetry, inject the current span into a map carrier and pass
// its "traceparent" entry here; this package depends on no tracer.
func WithTraceparent(ctx context.Context, traceparent string) context.Context {
	if !validTraceparent(traceparent) {
		return ctx
	}
	return context.WithValue(ctx, traceparentKey{}, traceparent)
}

// TraceparentFromContext returns the traceparent set with WithTraceparent, or "".
func TraceparentFromContext(ctx context.Context) string {
	tp, _ := ctx.Value(traceparentKey{}).(string)
	return tp
}

// validTraceparent checks the W3C Trace Context level 1 shape: version 00 is
// exactly 55 characters; a later version may append "-..." fields, which we
// keep as they are. Version ff and all-zero ids are invalid.
func validTraceparent(s string) bool {
	if len(s) < 55 || (len(s) > 55 && s[55] != '-') {
		return false
	}
	if s[2] != '-' || s[35] != '-' || s[52] != '-' {
		return false
	}
	version, traceID, parentID, flags := s[0:2], s[3:35], s[36:52], s[53:55]
	if !lowerHex(version) || version == "ff" || (version == "00" && len(s) != 55) {
		return false
	}
	return lowerHex(traceID) && !allZero(traceID) && lowerHex(parentID) && !allZero(parentID) && lowerHex(flags)
}

func lowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

func allZero(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] != '0' {
			return false
		}
	}
	return true
}
