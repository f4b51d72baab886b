package qstashdev

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strconv"
)

// Callbacks and failure callbacks (docs/qstash-protocol.md §8): after
// every attempt, and once more after the last failed one, a new signed and
// retried message reports the outcome to the configured URL.

// callbackPayload is the JSON QStash posts to callback and failure-callback
// URLs (docs/qstash-protocol.md §8.2). Times are strings of unix ms, as in the docs' example.
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
	// For a Workflow message (docs/qstash-protocol.md §18): its run, and
	// sourceBody is the run's initial payload, which the SDK's failure
	// function receives as the request payload.
	WorkflowRunID     string `json:"workflowRunId,omitempty"`
	WorkflowCreatedAt int64  `json:"workflowCreatedAt,omitempty"`
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
	if run := m.run; run != nil && len(run.steps) > 0 {
		p.SourceBody, p.WorkflowRunID, p.WorkflowCreatedAt = run.steps[0].Body, run.id, run.createdAt.UnixMilli()
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
		id: fastID("msg_", 28), url: cb.url, method: cb.method, header: hdr, body: body,
		retries: retries, retryDelay: rd, timeout: cb.timeout, callerIP: m.callerIP,
		createdAt: now, notBefore: now.Add(cb.delay), isCallback: true, parent: m,
	}
	m.children++
	s.admit(child)
}
