package qstashdev

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"runtime/debug"
	"strconv"
	"strings"
)

// apiError is an error with the HTTP status it maps to. Every handler error
// is turned into {"error": "..."} by writeError, the one place doing so.
type apiError struct {
	status int
	msg    string
}

func (e *apiError) Error() string { return e.msg }

func errorf(status int, format string, args ...any) error {
	return &apiError{status: status, msg: fmt.Sprintf(format, args...)}
}

func errTooLarge(limit int64) error {
	return errorf(http.StatusRequestEntityTooLarge, "message size exceeds the limit of %d bytes", limit)
}

var errNotFound = errorf(http.StatusNotFound, "not found")
var errMethod = errorf(http.StatusMethodNotAllowed, "method not allowed")

func writeError(w http.ResponseWriter, err error) {
	var ae *apiError
	if !errors.As(err, &ae) {
		ae = &apiError{status: http.StatusInternalServerError, msg: "internal error"}
	}
	writeJSON(w, ae.status, map[string]string{"error": ae.msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func (s *Server) authorized(r *http.Request) bool {
	tok := ""
	if a := r.Header.Get("Authorization"); len(a) > 7 && strings.EqualFold(a[:7], "Bearer ") {
		tok = strings.TrimSpace(a[7:])
	} else if q := r.URL.Query().Get("qstash_token"); q != "" {
		tok = q
	}
	if tok == "" {
		return false
	}
	if s.cfg.AllowAnyToken {
		return true
	}
	return subtle.ConstantTimeCompare([]byte(tok), []byte(s.cfg.Token)) == 1
}

// serveHTTP routes on the raw path: Go's ServeMux would clean
// "/v2/publish/https://x" into "https:/x" with a 307 (§1.2). Resource names
// match case-insensitively (qstash-go uses /v2/Schedules, §1.8).
func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	defer func() {
		if v := recover(); v != nil {
			if v == http.ErrAbortHandler {
				panic(v)
			}
			s.log.Error("handler panic", "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
			writeError(w, errorf(http.StatusInternalServerError, "internal error"))
		}
	}()
	p := strings.TrimPrefix(r.URL.EscapedPath(), "/")
	ver, after, _ := strings.Cut(p, "/")
	if !strings.EqualFold(ver, "v2") {
		writeError(w, errNotFound)
		return
	}
	if !s.authorized(r) {
		writeError(w, errorf(http.StatusUnauthorized, "unauthorized: missing or invalid token"))
		return
	}
	resource, rest, _ := strings.Cut(after, "/")
	m := r.Method
	switch strings.ToLower(resource) {
	case "publish":
		if m != http.MethodPost {
			writeError(w, errMethod)
			return
		}
		s.handlePublish(w, r, rest)
	case "enqueue":
		if m != http.MethodPost {
			writeError(w, errMethod)
			return
		}
		s.handleEnqueue(w, r, rest)
	case "batch":
		if rest != "" {
			writeError(w, errNotFound)
		} else if m != http.MethodPost {
			writeError(w, errMethod)
		} else {
			s.handleBatch(w, r)
		}
	case "messages":
		s.routeMessages(w, r, unescape(rest))
	case "dlq":
		s.routeDLQ(w, r, unescape(rest))
	case "keys":
		switch {
		case rest == "" && m == http.MethodGet:
			s.handleKeys(w)
		case strings.EqualFold(rest, "rotate") && m == http.MethodPost:
			s.handleRotate(w)
		case rest == "" || strings.EqualFold(rest, "rotate"):
			writeError(w, errMethod)
		default:
			writeError(w, errNotFound)
		}
	case "rotate": // qstash-go's spelling of /v2/keys/rotate (§1.8)
		if rest != "" {
			writeError(w, errNotFound)
		} else if m != http.MethodPost {
			writeError(w, errMethod)
		} else {
			s.handleRotate(w)
		}
	case "schedules":
		s.routeSchedules(w, r, rest)
	case "queues":
		s.routeQueues(w, r, unescape(rest))
	case "topics":
		s.routeTopics(w, r, unescape(rest))
	case "events":
		s.routeEvents(w, r, rest, "events")
	case "logs":
		s.routeEvents(w, r, rest, "logs")
	case "flowcontrol":
		s.routeFlowControl(w, r, unescape(rest))
	case "globalparallelism":
		if m != http.MethodGet {
			writeError(w, errMethod)
			return
		}
		s.mu.Lock()
		active := 0
		for _, fk := range s.flows {
			active += fk.inflight
		}
		s.mu.Unlock()
		writeJSON(w, http.StatusOK, map[string]int{"parallelismMax": 0, "parallelismCount": active})
	default:
		writeError(w, errNotFound)
	}
}

func unescape(s string) string {
	if u, err := url.PathUnescape(s); err == nil {
		return u
	}
	return s
}

// --- keys (§3.2, §5.7) ---------------------------------------------------

func (s *Server) handleKeys(w http.ResponseWriter) {
	cur, next := s.SigningKeys()
	writeJSON(w, http.StatusOK, map[string]string{"current": cur, "next": next})
}

func (s *Server) handleRotate(w http.ResponseWriter) {
	s.mu.Lock()
	s.curKey, s.nextKey = s.nextKey, randomID("sig_", 28)
	cur, next := s.curKey, s.nextKey
	s.mu.Unlock()
	s.log.Info("signing keys rotated")
	writeJSON(w, http.StatusOK, map[string]string{"current": cur, "next": next})
}

// --- messages (§5.1) -------------------------------------------------------

func (s *Server) routeMessages(w http.ResponseWriter, r *http.Request, id string) {
	switch {
	case id == "" && r.Method == http.MethodDelete:
		s.handleBulkCancel(w, r)
	case id == "":
		writeError(w, errMethod)
	case strings.Contains(id, "/"):
		writeError(w, errNotFound)
	case r.Method == http.MethodGet:
		s.mu.Lock()
		m := s.messages[id]
		var v messageJSON
		if m != nil {
			v = m.view()
		}
		s.mu.Unlock()
		if m == nil {
			writeError(w, errorf(http.StatusNotFound, "message %s not found", id))
			return
		}
		writeJSON(w, http.StatusOK, v)
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

// multiValues reads a list parameter given repeated or comma-joined.
func multiValues(q url.Values, name string) []string {
	var out []string
	for _, v := range q[name] {
		for p := range strings.SplitSeq(v, ",") {
			if p = strings.TrimSpace(p); p != "" {
				out = append(out, p)
			}
		}
	}
	return out
}

// idsFromRequest reads ids from the query (JS, OAS) or a JSON body (Go,
// Python) of a bulk DELETE (§1.8).
func idsFromRequest(w http.ResponseWriter, r *http.Request, field string) ([]string, error) {
	ids := multiValues(r.URL.Query(), field)
	body, err := readBody(w, r, 1<<20)
	if err != nil {
		return nil, err
	}
	if len(strings.TrimSpace(string(body))) > 0 {
		var req map[string]json.RawMessage
		if err := json.Unmarshal(body, &req); err != nil {
			return nil, errorf(http.StatusBadRequest, "invalid JSON body: %v", err)
		}
		if raw, ok := req[field]; ok {
			var fromBody []string
			if err := json.Unmarshal(raw, &fromBody); err != nil {
				return nil, errorf(http.StatusBadRequest, "%s must be an array of strings", field)
			}
			ids = append(ids, fromBody...)
		}
	}
	return ids, nil
}

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

func countParam(q url.Values, def, max int) (int, error) {
	v := q.Get("count")
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > max {
		return 0, errorf(http.StatusBadRequest, "invalid count %q: want 1..%d", v, max)
	}
	return n, nil
}

// messageFilter holds the §5.1/§5.5 filters: OR within one, AND across.
type messageFilter struct {
	values   map[string][]string
	from, to int64
}

var filterNames = []string{"messageId", "url", "topicName", "queueName", "scheduleId", "label", "flowControlKey", "callerIp", "responseStatus", "state", "host", "path"}

func messageFilterFrom(q url.Values) messageFilter {
	f := messageFilter{values: map[string][]string{}}
	for _, n := range filterNames {
		if vs := multiValues(q, n); len(vs) > 0 {
			f.values[n] = vs
		}
	}
	if vs := multiValues(q, "messageIds"); len(vs) > 0 {
		f.values["messageId"] = append(f.values["messageId"], vs...)
	}
	f.from, _ = strconv.ParseInt(q.Get("fromDate"), 10, 64)
	f.to, _ = strconv.ParseInt(q.Get("toDate"), 10, 64)
	return f
}

func (f messageFilter) matchField(name string, have ...string) bool {
	want, ok := f.values[name]
	if !ok {
		return true
	}
	for _, w := range want {
		for _, h := range have {
			if w == h {
				return true
			}
		}
	}
	return false
}

func (f messageFilter) match(m *message) bool {
	fk := ""
	if m.flow != nil {
		fk = m.flow.key
	}
	host, path := "", ""
	if u, err := url.Parse(m.url); err == nil {
		host, path = u.Host, u.Path
	}
	created := m.createdAt.UnixMilli()
	return f.matchField("messageId", m.id) && f.matchField("url", m.url) && f.matchField("topicName", m.topic) &&
		f.matchField("queueName", m.queueName) && f.matchField("scheduleId", m.scheduleID) &&
		f.matchField("label", m.labels...) && f.matchField("flowControlKey", fk) && f.matchField("callerIp", m.callerIP) &&
		f.matchField("host", host) && f.matchField("path", path) &&
		(f.from == 0 || created >= f.from) && (f.to == 0 || created <= f.to)
}

// --- DLQ (§5.5) -----------------------------------------------------------

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
		s.mu.Lock()
		e := s.dlq.get(rest)
		var v dlqJSON
		if e != nil {
			v = e.view()
		}
		s.mu.Unlock()
		if e == nil {
			writeError(w, errorf(http.StatusNotFound, "dlq message %s not found", rest))
			return
		}
		writeJSON(w, http.StatusOK, v)
	case r.Method == http.MethodDelete:
		s.mu.Lock()
		ok := s.dlq.remove(rest)
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
// requested order.
func (s *Server) filteredDLQ(q url.Values) []*dlqEntry {
	f := messageFilterFrom(q)
	var out []*dlqEntry
	for _, e := range s.dlq.list() {
		if f.match(e.msg) && f.matchField("responseStatus", strconv.Itoa(e.status)) {
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

// page cuts a listing at an offset cursor; the cursor is empty at the end.
func page[T any](all []T, q url.Values, def, max int) ([]T, string, error) {
	count, err := countParam(q, def, max)
	if err != nil {
		return nil, "", err
	}
	off := 0
	if c := q.Get("cursor"); c != "" {
		if off, err = strconv.Atoi(c); err != nil || off < 0 {
			return nil, "", errorf(http.StatusBadRequest, "invalid cursor %q", c)
		}
	}
	if off > len(all) {
		off = len(all)
	}
	end := min(off+count, len(all))
	cursor := ""
	if end < len(all) {
		cursor = strconv.Itoa(end)
	}
	return all[off:end], cursor, nil
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
	defer s.mu.Unlock()
	if len(ids) == 0 {
		for _, e := range s.filteredDLQ(r.URL.Query()) {
			ids = append(ids, e.id)
		}
	}
	n := 0
	for _, id := range ids {
		if s.dlq.remove(id) {
			n++
		}
	}
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

// retryDLQ republishes a dead letter as a new message (§2.3). Upstash-*
// headers of the retry request override the original configuration; the
// original delay, not-before and dedup id do not carry over.
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
	s.dlq.remove(id)
	s.mu.Unlock()
	return map[string]string{"messageId": resp.(pubResp).MessageID}, nil
}

// --- queues (§5.4) ----------------------------------------------------------

func (s *Server) routeQueues(w http.ResponseWriter, r *http.Request, rest string) {
	name, action, _ := strings.Cut(rest, "/")
	switch {
	case rest == "" && r.Method == http.MethodGet:
		s.mu.Lock()
		out := make([]queueJSON, 0, len(s.queues))
		for _, q := range s.queues {
			out = append(out, q.view())
		}
		s.mu.Unlock()
		writeJSON(w, http.StatusOK, out)
	case rest == "" && r.Method == http.MethodPost:
		body, err := readBody(w, r, 1<<20)
		if err != nil {
			writeError(w, err)
			return
		}
		var req struct {
			QueueName   string `json:"queueName"`
			Parallelism *int   `json:"parallelism"`
			Paused      *bool  `json:"paused"`
		}
		if err := json.Unmarshal(body, &req); err != nil {
			writeError(w, errorf(http.StatusBadRequest, "invalid JSON body: %v", err))
			return
		}
		if !validName(req.QueueName) {
			writeError(w, errorf(http.StatusBadRequest, "invalid queue name %q", req.QueueName))
			return
		}
		if req.Parallelism != nil && (*req.Parallelism < 0 || *req.Parallelism > 1000) {
			writeError(w, errorf(http.StatusBadRequest, "invalid parallelism %d", *req.Parallelism))
			return
		}
		s.mu.Lock()
		q := s.getQueue(req.QueueName)
		if req.Parallelism != nil && *req.Parallelism > 0 {
			q.parallelism = *req.Parallelism
		}
		if req.Paused != nil {
			q.paused = *req.Paused
		}
		q.updatedAt = s.cfg.Now()
		s.pumpQueue(q)
		s.mu.Unlock()
		w.WriteHeader(http.StatusOK)
	case rest == "":
		writeError(w, errMethod)
	case action == "" && (r.Method == http.MethodGet || r.Method == http.MethodDelete):
		s.mu.Lock()
		defer s.mu.Unlock()
		q := s.queues[name]
		if q == nil {
			writeError(w, errorf(http.StatusNotFound, "queue %s not found", name))
			return
		}
		if r.Method == http.MethodGet {
			writeJSON(w, http.StatusOK, q.view())
			return
		}
		for _, m := range s.messages {
			if m.queue == q {
				s.cancel(m)
			}
		}
		delete(s.queues, name)
		w.WriteHeader(http.StatusOK)
	case (strings.EqualFold(action, "pause") || strings.EqualFold(action, "resume")) && r.Method == http.MethodPost:
		s.mu.Lock()
		defer s.mu.Unlock()
		q := s.queues[name]
		if q == nil {
			writeError(w, errorf(http.StatusNotFound, "queue %s not found", name))
			return
		}
		q.paused = strings.EqualFold(action, "pause")
		q.updatedAt = s.cfg.Now()
		s.pumpQueue(q)
		w.WriteHeader(http.StatusOK)
	case action == "" || strings.EqualFold(action, "pause") || strings.EqualFold(action, "resume"):
		writeError(w, errMethod)
	default:
		writeError(w, errNotFound)
	}
}

// --- URL groups (§5.3) --------------------------------------------------------

func (s *Server) routeTopics(w http.ResponseWriter, r *http.Request, rest string) {
	name, action, _ := strings.Cut(rest, "/")
	switch {
	case rest == "" && r.Method == http.MethodGet:
		s.mu.Lock()
		out := make([]topicJSON, 0, len(s.topics))
		for _, t := range s.topics {
			out = append(out, t.view())
		}
		s.mu.Unlock()
		writeJSON(w, http.StatusOK, out)
	case rest == "":
		writeError(w, errMethod)
	case action == "" && r.Method == http.MethodGet:
		s.mu.Lock()
		t := s.topics[name]
		var v topicJSON
		if t != nil {
			v = t.view()
		}
		s.mu.Unlock()
		if t == nil {
			writeError(w, errorf(http.StatusNotFound, "url group %s not found", name))
			return
		}
		writeJSON(w, http.StatusOK, v)
	case action == "" && r.Method == http.MethodDelete:
		// Deleting a missing group succeeds, as the Go SDK tests expect.
		s.mu.Lock()
		delete(s.topics, name)
		s.mu.Unlock()
		w.WriteHeader(http.StatusOK)
	case strings.EqualFold(action, "endpoints") && (r.Method == http.MethodPost || r.Method == http.MethodDelete):
		s.handleEndpoints(w, r, name)
	case action == "" || strings.EqualFold(action, "endpoints"):
		writeError(w, errMethod)
	default:
		writeError(w, errNotFound)
	}
}

func (s *Server) handleEndpoints(w http.ResponseWriter, r *http.Request, name string) {
	if !validName(name) {
		writeError(w, errorf(http.StatusBadRequest, "invalid url group name %q", name))
		return
	}
	body, err := readBody(w, r, 1<<20)
	if err != nil {
		writeError(w, err)
		return
	}
	var req struct {
		Endpoints []endpoint `json:"endpoints"`
	}
	if err := json.Unmarshal(body, &req); err != nil || len(req.Endpoints) == 0 {
		writeError(w, errorf(http.StatusBadRequest, "invalid body: want {\"endpoints\":[{\"url\":...,\"name\":...}]}"))
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.topics[name]
	now := s.cfg.Now()
	if r.Method == http.MethodPost {
		for _, e := range req.Endpoints {
			if !validDestinationURL(e.URL) {
				writeError(w, errorf(http.StatusBadRequest, "invalid endpoint url %q: add http:// or https://", e.URL))
				return
			}
		}
		if t == nil {
			t = &topic{name: name, createdAt: now}
			s.topics[name] = t
		}
		for _, e := range req.Endpoints {
			replaced := false
			for i, old := range t.endpoints {
				if old.URL == e.URL || (e.Name != "" && old.Name == e.Name) {
					t.endpoints[i], replaced = e, true
					break
				}
			}
			if !replaced {
				t.endpoints = append(t.endpoints, e)
			}
		}
		t.updatedAt = now
		w.WriteHeader(http.StatusOK)
		return
	}
	if t == nil {
		writeError(w, errorf(http.StatusNotFound, "url group %s not found", name))
		return
	}
	kept := t.endpoints[:0]
	for _, old := range t.endpoints {
		drop := false
		for _, e := range req.Endpoints {
			drop = drop || (e.URL != "" && e.URL == old.URL) || (e.Name != "" && e.Name == old.Name)
		}
		if !drop {
			kept = append(kept, old)
		}
	}
	t.endpoints, t.updatedAt = kept, now
	if len(kept) == 0 { // removing the last endpoint deletes the group
		delete(s.topics, name)
	}
	w.WriteHeader(http.StatusOK)
}

// --- events / logs (§5.6) -----------------------------------------------------

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
	events, cursor, err := page(all, q, 100, 1000)
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

// --- flow control (§5.8, read-only) -------------------------------------------

func (s *Server) routeFlowControl(w http.ResponseWriter, r *http.Request, rest string) {
	if r.Method != http.MethodGet {
		writeError(w, errMethod)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if rest == "" {
		search := r.URL.Query().Get("search")
		out := []flowJSON{}
		for _, fk := range s.flows {
			if search == "" || strings.Contains(fk.key, search) {
				out = append(out, fk.view())
			}
		}
		writeJSON(w, http.StatusOK, out)
		return
	}
	fk := s.flows[rest]
	if fk == nil {
		writeError(w, errorf(http.StatusNotFound, "flow control key %s not found", rest))
		return
	}
	writeJSON(w, http.StatusOK, fk.view())
}
