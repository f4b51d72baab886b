package qstashdev

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// attempt is a snapshot of what one delivery needs, taken under the lock.
type attempt struct {
	url, method string
	header      http.Header // shared, read-only
	body        []byte      // shared, read-only
	retried     int
	timeout     time.Duration
	key         string
	messageID   string
	topic       string
	scheduleID  string
	callerIP    string
}

type attemptResult struct {
	status   int
	header   http.Header
	body     []byte
	err      error
	timedOut bool
}

func (r *attemptResult) success() bool {
	return r.err == nil && r.status >= 200 && r.status < 300
}

func (r *attemptResult) errorText() string {
	switch {
	case r.timedOut:
		return "timeout"
	case r.err != nil:
		return r.err.Error()
	default:
		return fmt.Sprintf("status %d", r.status)
	}
}

// runnerIdle is how long a delivery goroutine waits for the next attempt
// before it exits.
const runnerIdle = 5 * time.Second

// spawn runs fn (one delivery attempt) on a delivery goroutine that is
// waiting for work, or on a new one when none is. Reusing them spares each
// attempt a new goroutine whose stack must grow again, step by step, to
// what net/http needs. It never blocks, so s.mu may be held.
func (s *Server) spawn(fn func()) {
	select {
	case s.idleRunners <- fn:
	default:
		go s.runner(fn)
	}
}

// runner runs fn, then the attempts spawn hands it, until it has waited
// runnerIdle for one or the server stops.
func (s *Server) runner(fn func()) {
	idle := time.NewTimer(runnerIdle)
	defer idle.Stop()
	for {
		fn()
		idle.Reset(runnerIdle)
		select {
		case fn = <-s.idleRunners:
		case <-idle.C:
			return
		case <-s.stop:
			return
		}
	}
}

// maxResponseBody caps how much of a destination's answer is kept for the
// DLQ and callbacks (the rest is read and dropped so the connection can be
// reused).
const maxResponseBody = 256 << 10

// deliver performs one HTTP attempt with the headers of
// docs/qstash-protocol.md §4.1 and a fresh token
// (docs/qstash-protocol.md §5.1). It never holds s.mu.
func (s *Server) deliver(a attempt) *attemptResult {
	now := s.cfg.Now()
	tok, err := signToken(a.key, a.url, a.body, now, fastID("jwt_", 28), 0)
	if err != nil {
		return &attemptResult{err: err}
	}
	ctx, cancel := context.WithTimeout(s.baseCtx, a.timeout)
	defer cancel()
	var body io.Reader = http.NoBody
	if len(a.body) > 0 {
		body = bytes.NewReader(a.body)
	}
	req, err := http.NewRequestWithContext(ctx, a.method, a.url, body)
	if err != nil {
		return &attemptResult{err: fmt.Errorf("invalid destination: %w", err)}
	}
	// The keys are written in canonical form, so no Set needs to
	// canonicalize them; the message's own headers are shared, read-only.
	h := make(http.Header, len(a.header)+8)
	for k, vs := range a.header {
		h[k] = vs
	}
	h["User-Agent"] = []string{"Upstash-QStash"}
	h["Upstash-Signature"] = []string{tok}
	h["Upstash-Message-Id"] = []string{a.messageID}
	h["Upstash-Retried"] = []string{strconv.Itoa(a.retried)}
	if a.topic != "" {
		h["Upstash-Topic-Name"] = []string{a.topic}
	}
	if a.scheduleID != "" {
		h["Upstash-Schedule-Id"] = []string{a.scheduleID}
	}
	if a.callerIP != "" {
		h["Upstash-Caller-Ip"] = []string{a.callerIP}
	}
	if s.cfg.Region != "" {
		h["Upstash-Region"] = []string{s.cfg.Region}
	}
	req.Header = h
	resp, err := s.client.Do(req)
	if err != nil {
		return &attemptResult{err: err, timedOut: errors.Is(err, context.DeadlineExceeded)}
	}
	defer resp.Body.Close()
	rb, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBody))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<20))
	res := &attemptResult{status: resp.StatusCode, header: resp.Header, body: rb}
	if err != nil && ctx.Err() != nil {
		// The destination answered but did not finish its body in time.
		res.err, res.timedOut = err, errors.Is(ctx.Err(), context.DeadlineExceeded)
	}
	return res
}

// backoff is the wait before the next attempt
// (docs/qstash-protocol.md §6.2–§6.4): the destination's
// Retry-After family if usable, else Upstash-Retry-Delay, else
// min(86400, e^(2.5 n)) seconds; always multiplied by Config.TimeScale.
func (s *Server) backoff(m *message, res *attemptResult) time.Duration {
	n := m.attempts // retry number: 1 before the first retry
	var d time.Duration
	found := false
	if res.header != nil {
		for _, h := range retryAfterHeaders {
			if v := res.header.Get(h); v != "" {
				if d, found = parseRetryAfter(v, s.cfg.Now()); found {
					break
				}
			}
		}
	}
	if !found && m.retryDelay != nil {
		if ms, ok := m.retryDelay.delayMillis(n - 1); ok {
			d, found = time.Duration(math.Min(ms, 86400e3)*float64(time.Millisecond)), true
		}
	}
	if !found {
		d = time.Duration(math.Min(86400, math.Exp(2.5*float64(n))) * float64(time.Second))
	}
	return time.Duration(float64(d) * s.cfg.TimeScale)
}

func equalFoldTrim(a, b string) bool { return strings.EqualFold(strings.TrimSpace(a), b) }
