package qstashdev

import (
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Dead-letter queue (docs/qstash-protocol.md §7): storage, the API
// (list, get, delete, bulk delete, retry one, bulk retry) and the JSON view.

// dlqEntry is a dead-lettered message with the last response it got.
type dlqEntry struct {
	id     string
	at     time.Time
	msg    *message
	status int
	header http.Header
	body   []byte
	errTxt string
}

// dlqStore keeps entries in arrival order, bounded by max: the oldest entry
// is dropped when a new one would exceed it. Guarded by Server.mu.
type dlqStore struct {
	max     int
	seq     uint64
	byID    map[string]*dlqEntry
	order   []*dlqEntry // may hold deleted entries (nil-ed out lazily via byID)
	removed int
}

func newDLQStore(max int) dlqStore {
	return dlqStore{max: max, byID: map[string]*dlqEntry{}}
}

// add stores e under a new id shaped like the real service's
// ("<unix ms>-<seq>").
func (d *dlqStore) add(e *dlqEntry) {
	d.seq++
	e.id = fmt.Sprintf("%d-%d", e.at.UnixMilli(), d.seq)
	d.byID[e.id] = e
	d.order = append(d.order, e)
	for len(d.byID) > d.max {
		old := d.order[0]
		d.order[0] = nil
		d.order = d.order[1:]
		if d.byID[old.id] == old {
			delete(d.byID, old.id)
		} else {
			d.removed--
		}
	}
}

func (d *dlqStore) get(id string) *dlqEntry { return d.byID[id] }

func (d *dlqStore) remove(id string) bool {
	if _, ok := d.byID[id]; !ok {
		return false
	}
	delete(d.byID, id)
	d.removed++
	if d.removed > 64 && d.removed > len(d.order)/2 {
		live := make([]*dlqEntry, 0, len(d.byID))
		for _, e := range d.order {
			if d.byID[e.id] == e {
				live = append(live, e)
			}
		}
		d.order, d.removed = live, 0
	}
	return true
}

// list returns live entries, oldest first.
func (d *dlqStore) list() []*dlqEntry {
	out := make([]*dlqEntry, 0, len(d.byID))
	for _, e := range d.order {
		if d.byID[e.id] == e {
			out = append(out, e)
		}
	}
	return out
}

// deadLetter stores m with its last response and returns the DLQ id (the
// failure callback's dlqId). The caller holds s.mu.
func (s *Server) deadLetter(m *message, res *attemptResult) string {
	e := &dlqEntry{at: s.cfg.Now(), msg: m, status: res.status, header: res.header, body: res.body}
	if res.err != nil {
		e.errTxt = res.errorText()
	}
	s.dlq.add(e)
	s.jDLQ(e)
	return e.id
}

// dlqJSON is the DLQ message: the Message object plus the last response.
type dlqJSON struct {
	messageJSON
	DLQID              string      `json:"dlqId"`
	ResponseStatus     int         `json:"responseStatus"`
	ResponseHeader     http.Header `json:"responseHeader,omitempty"`
	ResponseBody       string      `json:"responseBody,omitempty"`
	ResponseBodyBase64 string      `json:"responseBodyBase64,omitempty"`
	Error              string      `json:"error,omitempty"`
}

func (e *dlqEntry) view() dlqJSON {
	v := dlqJSON{messageJSON: e.msg.view(), DLQID: e.id, ResponseStatus: e.status, ResponseHeader: e.header, Error: e.errTxt}
	v.ResponseBody, v.ResponseBodyBase64 = textOrBase64(e.body)
	return v
}

func (s *Server) routeDLQ(w http.ResponseWriter, r *http.Request, rest string) {
	switch {
	case rest == "" && r.Method == http.MethodGet:
		s.handleDLQList(w, r)
	case rest == "" && r.Method == http.MethodDelete:
		s.handleDLQBulkDelete(w, r)
	case strings.EqualFold(rest, "retry") && r.Method == http.MethodPost:
		s.handleDLQBulkRetry(w, r)
	case hasPrefixFold(rest, "retry/") && r.Method == http.MethodPost:
		id := rest[len("retry/"):]
		resp, err := s.retryDLQ(id, r)
		if err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, http.StatusCreated, resp)
	case rest == "" || hasPrefixFold(rest, "retry"):
		writeError(w, errMethod)
	case strings.Contains(rest, "/"):
		writeError(w, errNotFound)
	case r.Method == http.MethodGet:
		serveView(s, w, s.dlq.byID, "dlq message", rest)
	case r.Method == http.MethodDelete:
		s.mu.Lock()
		ok := s.dlq.remove(rest)
		if ok {
			s.jDLQRemoved(rest)
		}
		s.mu.Unlock()
		if !ok {
			writeError(w, errorf(http.StatusNotFound, "dlq message %s not found", rest))
			return
		}
		w.WriteHeader(http.StatusOK)
	default:
		writeError(w, errMethod)
	}
}

// filteredDLQ returns the entries matching the query's filters, in the
// requested order. The caller holds s.mu.
func (s *Server) filteredDLQ(q url.Values) []*dlqEntry {
	f := messageFilterFrom(q)
	var ids map[string]bool // dlqIds narrows the listing like any other filter
	if vs := multiValues(q, "dlqIds"); len(vs) > 0 {
		ids = make(map[string]bool, len(vs))
		for _, id := range vs {
			ids[id] = true
		}
	}
	var out []*dlqEntry
	for _, e := range s.dlq.list() {
		if (ids == nil || ids[e.id]) && f.match(e.msg) && f.matchField("responseStatus", strconv.Itoa(e.status)) {
			out = append(out, e)
		}
	}
	if strings.EqualFold(q.Get("order"), "latestFirst") {
		for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
			out[i], out[j] = out[j], out[i]
		}
	}
	return out
}

func (s *Server) handleDLQList(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	s.mu.Lock()
	entries, cursor, err := page(s.filteredDLQ(q), q, 100, 100)
	views := make([]dlqJSON, len(entries))
	for i, e := range entries {
		views[i] = e.view()
	}
	s.mu.Unlock()
	if err != nil {
		writeError(w, err)
		return
	}
	resp := map[string]any{"messages": views}
	if cursor != "" {
		resp["cursor"] = cursor
	}
	writeJSON(w, http.StatusOK, resp)
}

func (s *Server) handleDLQBulkDelete(w http.ResponseWriter, r *http.Request) {
	ids, err := idsFromRequest(w, r, "dlqIds")
	if err != nil {
		writeError(w, err)
		return
	}
	s.mu.Lock()
	if len(ids) == 0 {
		for _, e := range s.filteredDLQ(r.URL.Query()) {
			ids = append(ids, e.id)
		}
	}
	n := 0
	for _, id := range ids {
		if s.dlq.remove(id) {
			s.jDLQRemoved(id)
			n++
		}
	}
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]int{"deleted": n})
}

func (s *Server) handleDLQBulkRetry(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	ids := multiValues(q, "dlqIds")
	if len(ids) == 0 {
		s.mu.Lock()
		for _, e := range s.filteredDLQ(q) {
			ids = append(ids, e.id)
		}
		s.mu.Unlock()
	}
	responses := []map[string]string{}
	for _, id := range ids {
		resp, err := s.retryDLQ(id, r)
		if err != nil {
			writeError(w, err)
			return
		}
		responses = append(responses, resp)
	}
	writeJSON(w, http.StatusCreated, map[string]any{"cursor": "", "responses": responses})
}

// retryDLQ republishes a dead letter as a new message. Upstash-* headers of
// the retry request override the original configuration; the original
// delay, not-before and dedup id do not carry over. It takes s.mu itself.
func (s *Server) retryDLQ(id string, r *http.Request) (map[string]string, error) {
	s.mu.Lock()
	e := s.dlq.get(id)
	s.mu.Unlock()
	if e == nil {
		return nil, errorf(http.StatusNotFound, "dlq message %s not found", id)
	}
	m := e.msg
	h := m.origHeader.Clone()
	if h == nil { // callback messages have no publish request
		h = http.Header{}
		for k, vs := range m.header {
			if k == "Content-Type" {
				h[k] = vs
			} else {
				h["Upstash-Forward-"+k] = vs
			}
		}
		h.Set("Upstash-Method", m.method)
		h.Set("Upstash-Retries", strconv.Itoa(m.retries))
	}
	for _, k := range []string{"Upstash-Delay", "Upstash-Not-Before", "Upstash-Deduplication-Id", "Upstash-Content-Based-Deduplication"} {
		h.Del(k)
	}
	for k, vs := range r.Header {
		if hasPrefixFold(k, "Upstash-") {
			h[k] = vs
		}
	}
	resp, _, err := s.publish(publishRequest{destination: m.url, queueName: m.queueName, header: h, body: m.body, callerIP: callerIP(r), scheduleID: m.scheduleID})
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	if s.dlq.remove(id) {
		s.jDLQRemoved(id)
	}
	s.mu.Unlock()
	return map[string]string{"messageId": resp.(pubResp).MessageID}, nil
}
