package qstashdev

import (
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// The event log (docs/qstash-protocol.md §15): one record per state change
// of a message, served newest first at GET /v2/events (what the SDKs call)
// and GET /v2/logs (what the OpenAPI document names).

// eventRecord is one entry of the log.
type eventRecord struct {
	Time             int64    `json:"time"`
	MessageID        string   `json:"messageId"`
	State            string   `json:"state"`
	Error            string   `json:"error,omitempty"`
	NextDeliveryTime int64    `json:"nextDeliveryTime,omitempty"`
	URL              string   `json:"url"`
	TopicName        string   `json:"topicName,omitempty"`
	EndpointName     string   `json:"endpointName,omitempty"`
	ScheduleID       string   `json:"scheduleId,omitempty"`
	QueueName        string   `json:"queueName,omitempty"`
	ResponseStatus   int      `json:"responseStatus,omitempty"`
	Method           string   `json:"method,omitempty"`
	MaxRetries       int      `json:"maxRetries"`
	Label            string   `json:"label,omitempty"`
	Labels           []string `json:"labels,omitempty"`
	seq              uint64
}

// eventLog is a ring buffer of the newest max events. Guarded by
// Server.mu.
type eventLog struct {
	max  int
	buf  []eventRecord
	next int
	seq  uint64
}

func (l *eventLog) add(e eventRecord) {
	l.seq++
	e.seq = l.seq
	if len(l.buf) < l.max {
		l.buf = append(l.buf, e)
		return
	}
	l.buf[l.next] = e
	l.next = (l.next + 1) % l.max
}

// newestFirst calls fn for each event, newest first, until fn returns false.
func (l *eventLog) newestFirst(fn func(e *eventRecord) bool) {
	n := len(l.buf)
	for i := range n {
		idx := (l.next - 1 - i + 2*n) % n
		if len(l.buf) < l.max {
			idx = n - 1 - i
		}
		if !fn(&l.buf[idx]) {
			return
		}
	}
}

// event records that m entered state. The caller holds s.mu.
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
	if s.onEvent != nil {
		s.onEvent(e.State, e.MessageID)
	}
}

// routeEvents serves the log under the JSON field the path asked for
// ("events" or "logs").
func (s *Server) routeEvents(w http.ResponseWriter, r *http.Request, rest, field string) {
	if rest != "" {
		writeError(w, errNotFound)
		return
	}
	if r.Method != http.MethodGet {
		writeError(w, errMethod)
		return
	}
	q := r.URL.Query()
	f := messageFilterFrom(q)
	states := map[string]bool{}
	for _, st := range multiValues(q, "state") {
		st = strings.ToUpper(st)
		switch st {
		case "CANCELED":
			st = stateCancelled
		case "IN_PROGRESS":
			states[stateActive], states[stateRetry], states[stateError] = true, true, true
		}
		states[st] = true
	}
	s.mu.Lock()
	var all []eventRecord
	s.events.newestFirst(func(e *eventRecord) bool {
		ok := f.matchField("messageId", e.MessageID) && f.matchField("url", e.URL) && f.matchField("topicName", e.TopicName) &&
			f.matchField("queueName", e.QueueName) && f.matchField("scheduleId", e.ScheduleID) && f.matchField("label", e.Labels...) &&
			(len(states) == 0 || states[e.State]) && (f.from == 0 || e.Time >= f.from) && (f.to == 0 || e.Time <= f.to)
		if ok {
			all = append(all, *e)
		}
		return true
	})
	s.mu.Unlock()
	events, cursor, err := timePage(all, q, 100, 1000)
	if err != nil {
		writeError(w, err)
		return
	}
	if events == nil {
		events = []eventRecord{}
	}
	resp := map[string]any{field: events}
	if cursor != "" {
		resp["cursor"] = cursor
	}
	writeJSON(w, http.StatusOK, resp)
}

// timePage cuts the newest-first log at a time cursor, as the SDKs page it
// (docs/qstash-protocol.md §15): the cursor is a unix time in milliseconds
// (the JS SDK starts from Date.now()), a page holds the events at or before
// it, and the answer's cursor is the time of the first event left out. A
// page never splits one millisecond, so no event is listed twice or
// skipped: it ends before the millisecond the count would cut, or, when
// that millisecond alone fills it, takes all of its events.
func timePage(all []eventRecord, q url.Values, def, max int) ([]eventRecord, string, error) {
	count, err := countParam(q, def, max)
	if err != nil {
		return nil, "", err
	}
	if c := q.Get("cursor"); c != "" {
		at, err := strconv.ParseInt(c, 10, 64)
		if err != nil || at < 0 {
			return nil, "", errorf(http.StatusBadRequest, "invalid cursor %q: want a unix time in milliseconds", c)
		}
		skip := 0
		for skip < len(all) && all[skip].Time > at {
			skip++
		}
		all = all[skip:]
	}
	if len(all) <= count {
		return all, "", nil
	}
	end := count
	for end > 0 && all[end-1].Time == all[end].Time {
		end--
	}
	if end == 0 { // one millisecond holds more than a page: take it whole
		for end = count; end < len(all) && all[end].Time == all[0].Time; end++ {
		}
		if end == len(all) {
			return all, "", nil
		}
	}
	return all[:end], strconv.FormatInt(all[end].Time, 10), nil
}
