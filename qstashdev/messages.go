package qstashdev

import (
	"net/http"
	"strings"
)

// Messages API (docs/qstash-protocol.md §13): GET and DELETE
// /v2/messages/{id}, bulk DELETE /v2/messages. Only pending messages are
// found: a message leaves the store once delivered, dead-lettered or
// cancelled.

// messageJSON is the Message object. callerIP and callerIp are both
// emitted because the SDKs disagree on the spelling.
type messageJSON struct {
	MessageID             string      `json:"messageId"`
	URL                   string      `json:"url"`
	TopicName             string      `json:"topicName,omitempty"`
	EndpointName          string      `json:"endpointName,omitempty"`
	Method                string      `json:"method"`
	Header                http.Header `json:"header,omitempty"`
	Body                  string      `json:"body,omitempty"`
	BodyBase64            string      `json:"bodyBase64,omitempty"`
	MaxRetries            int         `json:"maxRetries"`
	NotBefore             int64       `json:"notBefore"`
	CreatedAt             int64       `json:"createdAt"`
	Callback              string      `json:"callback,omitempty"`
	FailureCallback       string      `json:"failureCallback,omitempty"`
	CallbackHeader        http.Header `json:"callbackHeader,omitempty"`
	FailureCallbackHeader http.Header `json:"failureCallbackHeader,omitempty"`
	QueueName             string      `json:"queueName,omitempty"`
	ScheduleID            string      `json:"scheduleId,omitempty"`
	CallerIP              string      `json:"callerIP,omitempty"`
	CallerIPAlt           string      `json:"callerIp,omitempty"`
	Label                 string      `json:"label,omitempty"`
	Labels                []string    `json:"labels,omitempty"`
	FlowControlKey        string      `json:"flowControlKey,omitempty"`
	Parallelism           int         `json:"parallelism,omitempty"`
	Rate                  int         `json:"rate,omitempty"`
	Period                int64       `json:"period,omitempty"`
	RetryDelayExpression  string      `json:"retryDelayExpression,omitempty"`
}

// view renders m for the API. It reads only fields fixed at creation.
func (m *message) view() messageJSON {
	v := messageJSON{
		MessageID: m.id, URL: m.url, TopicName: m.topic, EndpointName: m.endpoint, Method: m.method,
		Header: redactHeader(m.header, m.redact), MaxRetries: m.retries,
		NotBefore: m.notBefore.UnixMilli(), CreatedAt: m.createdAt.UnixMilli(),
		QueueName: m.queueName, ScheduleID: m.scheduleID, CallerIP: m.callerIP, CallerIPAlt: m.callerIP,
		Labels: m.labels,
	}
	if m.redact.body {
		v.Body = redacted(m.body)
	} else {
		v.Body, v.BodyBase64 = textOrBase64(m.body)
	}
	if len(m.labels) > 0 {
		v.Label = m.labels[0]
	}
	if m.callback != nil {
		v.Callback, v.CallbackHeader = m.callback.url, nonEmpty(m.callback.header)
	}
	if m.failure != nil {
		v.FailureCallback, v.FailureCallbackHeader = m.failure.url, nonEmpty(m.failure.header)
	}
	if m.flow != nil {
		v.FlowControlKey, v.Parallelism, v.Rate = m.flow.key, m.flow.parallelism, m.flow.rate
		v.Period = int64(m.flow.period.Seconds())
	}
	if m.retryDelay != nil {
		v.RetryDelayExpression = m.retryDelay.src
	}
	return v
}

func (s *Server) routeMessages(w http.ResponseWriter, r *http.Request, id string) {
	switch {
	case id == "" && r.Method == http.MethodDelete:
		s.handleBulkCancel(w, r)
	case id == "":
		writeError(w, errMethod)
	case strings.Contains(id, "/"):
		writeError(w, errNotFound)
	case r.Method == http.MethodGet:
		serveView(s, w, s.messages, "message", id)
	case r.Method == http.MethodDelete:
		s.mu.Lock()
		m := s.messages[id]
		if m != nil {
			s.cancel(m)
		}
		s.mu.Unlock()
		if m == nil {
			writeError(w, errorf(http.StatusNotFound, "message %s not found", id))
			return
		}
		s.log.Info("cancelled", "messageId", id)
		writeJSON(w, http.StatusOK, map[string]int{"cancelled": 1})
	default:
		writeError(w, errMethod)
	}
}

// handleBulkCancel cancels the listed ids, or else every message matching
// the filters; no ids and no filters cancels everything.
func (s *Server) handleBulkCancel(w http.ResponseWriter, r *http.Request) {
	ids, err := idsFromRequest(w, r, "messageIds")
	if err != nil {
		writeError(w, err)
		return
	}
	q := r.URL.Query()
	count, err := countParam(q, 0, 500)
	if err != nil {
		writeError(w, err)
		return
	}
	s.mu.Lock()
	var victims []*message
	if len(ids) > 0 {
		for _, id := range ids {
			if m := s.messages[id]; m != nil && !m.cancelled {
				victims = append(victims, m)
			}
		}
	} else {
		f := messageFilterFrom(q)
		for _, m := range s.messages {
			if !m.cancelled && f.match(m) {
				victims = append(victims, m)
			}
		}
	}
	if count > 0 && len(victims) > count {
		victims = victims[:count]
	}
	for _, m := range victims {
		s.cancel(m)
	}
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]int{"cancelled": len(victims)})
}
