package qstashdev

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
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

// maxResponseBody caps how much of a destination's answer is kept for the
// DLQ and callbacks (the rest is read and dropped so the connection can be
// reused).
const maxResponseBody = 256 << 10

// deliver performs one HTTP attempt with the §2.1 headers and a fresh §3.8
// token. It never holds s.mu.
func (s *Server) deliver(a attempt) *attemptResult {
	now := s.cfg.Now()
	tok, err := signToken(a.key, a.url, a.body, now, randomID("jwt_", 28), 0)
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
	for k, vs := range a.header {
		req.Header[k] = vs
	}
	req.Header.Set("User-Agent", "Upstash-QStash")
	req.Header.Set("Upstash-Signature", tok)
	req.Header.Set("Upstash-Message-Id", a.messageID)
	req.Header.Set("Upstash-Retried", strconv.Itoa(a.retried))
	if a.topic != "" {
		req.Header.Set("Upstash-Topic-Name", a.topic)
	}
	if a.scheduleID != "" {
		req.Header.Set("Upstash-Schedule-Id", a.scheduleID)
	}
	if a.callerIP != "" {
		req.Header.Set("Upstash-Caller-Ip", a.callerIP)
	}
	if s.cfg.Region != "" {
		req.Header.Set("Upstash-Region", s.cfg.Region)
	}
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

// backoff is the wait before the next attempt (§2.2): the destination's
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

// callbackPayload is the JSON QStash posts to callback and failure-callback
// URLs (§2.5). Times are strings of unix ms, as in the docs' example.
type callbackPayload struct {
	Status          int         `json:"status"`
	Header          http.Header `json:"header"`
	Body            string      `json:"body"`
	Retried         int         `json:"retried"`
	MaxRetries      int         `json:"maxRetries"`
	DLQID           string      `json:"dlqId,omitempty"`
	SourceMessageID string      `json:"sourceMessageId"`
	TopicName       string      `json:"topicName,omitempty"`
	EndpointName    string      `json:"endpointName,omitempty"`
	URL             string      `json:"url"`
	Method          string      `json:"method"`
	SourceHeader    http.Header `json:"sourceHeader"`
	SourceBody      string      `json:"sourceBody"`
	NotBefore       string      `json:"notBefore"`
	CreatedAt       string      `json:"createdAt"`
	ScheduleID      string      `json:"scheduleId,omitempty"`
	CallerIP        string      `json:"callerIP,omitempty"`
	Error           string      `json:"error,omitempty"`
}

// spawnCallback publishes the callback message for m's last attempt. It is
// an ordinary signed, retried message (no queue, no flow control), and m
// keeps its queue slot until it is done.
func (s *Server) spawnCallback(m *message, cb *callbackConfig, res *attemptResult, dlqID string) {
	p := callbackPayload{
		Status: res.status, Header: res.header, Body: base64.StdEncoding.EncodeToString(res.body),
		Retried: m.attempts - 1, MaxRetries: m.retries, DLQID: dlqID,
		SourceMessageID: m.id, TopicName: m.topic, EndpointName: m.endpoint, URL: m.url, Method: m.method,
		SourceHeader: m.header, SourceBody: base64.StdEncoding.EncodeToString(m.body),
		NotBefore: strconv.FormatInt(m.notBefore.UnixMilli(), 10), CreatedAt: strconv.FormatInt(m.createdAt.UnixMilli(), 10),
		ScheduleID: m.scheduleID, CallerIP: m.callerIP,
	}
	if res.err != nil {
		p.Error = res.errorText()
	}
	if p.Header == nil {
		p.Header = http.Header{}
	}
	if p.SourceHeader == nil {
		p.SourceHeader = http.Header{}
	}
	body, err := json.Marshal(p)
	if err != nil {
		s.log.Error("encode callback", "messageId", m.id, "err", err)
		return
	}
	hdr := cb.header.Clone()
	hdr.Set("Content-Type", "application/json")
	retries := m.retries
	if cb.hasRetries {
		retries = cb.retries
	}
	rd := cb.retryDelay
	if rd == nil {
		rd = m.retryDelay
	}
	now := s.cfg.Now()
	child := &message{
		id: randomID("msg_", 28), url: cb.url, method: cb.method, header: hdr, body: body,
		retries: retries, retryDelay: rd, timeout: cb.timeout, callerIP: m.callerIP,
		createdAt: now, notBefore: now.Add(cb.delay), isCallback: true, parent: m,
	}
	m.children++
	s.admit(child)
}

// event appends to the bounded event log (§5.6).
func (s *Server) event(m *message, state string, res *attemptResult, errText string) {
	e := eventRecord{
		Time: s.cfg.Now().UnixMilli(), MessageID: m.id, State: state, Error: errText,
		URL: m.url, TopicName: m.topic, EndpointName: m.endpoint, ScheduleID: m.scheduleID,
		QueueName: m.queueName, Method: m.method, MaxRetries: m.retries, Labels: m.labels,
	}
	if len(m.labels) > 0 {
		e.Label = m.labels[0]
	}
	if state == stateRetry {
		e.NextDeliveryTime = m.nextAt.UnixMilli()
	}
	if res != nil {
		e.ResponseStatus = res.status
	}
	s.events.add(e)
}

func equalFoldTrim(a, b string) bool { return strings.EqualFold(strings.TrimSpace(a), b) }
