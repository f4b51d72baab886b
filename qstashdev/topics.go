package qstashdev

import (
	"encoding/json"
	"net/http"
	"strings"
	"time"
)

// URL groups, a.k.a. topics (docs/qstash-protocol.md §11): a publish to a
// group's name fans out to one message per endpoint.

// topic is a URL group. Guarded by Server.mu.
type topic struct {
	name      string
	createdAt time.Time
	updatedAt time.Time
	endpoints []endpoint
	// headers are the group's default publish headers (PATCH
	// /v2/topics/{name}): applied to every publish to the group where the
	// publish request does not set the same header.
	headers http.Header
}

type endpoint struct {
	Name string `json:"name,omitempty"`
	URL  string `json:"url"`
}

type topicJSON struct {
	Name      string      `json:"name"`
	CreatedAt int64       `json:"createdAt"`
	UpdatedAt int64       `json:"updatedAt"`
	Endpoints []endpoint  `json:"endpoints"`
	Headers   http.Header `json:"headers,omitempty"`
}

func (t *topic) view() topicJSON {
	return topicJSON{Name: t.name, CreatedAt: t.createdAt.UnixMilli(), UpdatedAt: t.updatedAt.UnixMilli(),
		Endpoints: append([]endpoint{}, t.endpoints...), Headers: nonEmpty(t.headers.Clone())}
}

func (s *Server) routeTopics(w http.ResponseWriter, r *http.Request, rest string) {
	name, action, _ := strings.Cut(rest, "/")
	switch {
	case rest == "" && r.Method == http.MethodGet:
		writeJSON(w, http.StatusOK, views(s, s.topics))
	case rest == "":
		writeError(w, errMethod)
	case action == "" && r.Method == http.MethodGet:
		serveView(s, w, s.topics, "url group", name)
	case action == "" && r.Method == http.MethodDelete:
		// Deleting a missing group succeeds, as the Go SDK tests expect.
		s.mu.Lock()
		delete(s.topics, name)
		s.jTopic(name)
		s.mu.Unlock()
		w.WriteHeader(http.StatusOK)
	case action == "" && r.Method == http.MethodPatch:
		s.handleTopicHeaders(w, r, name)
	case strings.EqualFold(action, "endpoints") && (r.Method == http.MethodPost || r.Method == http.MethodDelete):
		s.handleEndpoints(w, r, name)
	case action == "" || strings.EqualFold(action, "endpoints"):
		writeError(w, errMethod)
	default:
		writeError(w, errNotFound)
	}
}

// handleEndpoints adds (POST) or removes (DELETE) endpoints of a group. A
// POST creates the group; removing the last endpoint deletes it.
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
	if r.Method == http.MethodPost {
		for _, e := range req.Endpoints {
			if !validDestinationURL(e.URL) {
				writeError(w, errorf(http.StatusBadRequest, "invalid endpoint url %q: add http:// or https://", e.URL))
				return
			}
		}
		s.mu.Lock()
		s.upsertEndpoints(name, req.Endpoints)
		s.mu.Unlock()
		w.WriteHeader(http.StatusOK)
		return
	}
	s.mu.Lock()
	found := s.removeEndpoints(name, req.Endpoints)
	s.mu.Unlock()
	if !found {
		writeError(w, errorf(http.StatusNotFound, "url group %s not found", name))
		return
	}
	w.WriteHeader(http.StatusOK)
}

// upsertEndpoints adds eps to the group, replacing endpoints with the same
// URL or name, and creates the group if needed. The caller holds s.mu.
func (s *Server) upsertEndpoints(name string, eps []endpoint) {
	now := s.cfg.Now()
	t := s.topics[name]
	if t == nil {
		t = &topic{name: name, createdAt: now}
		s.topics[name] = t
	}
	for _, e := range eps {
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
	s.jTopic(name)
}

// removeEndpoints drops the endpoints matching eps by URL or name and
// reports whether the group existed. The caller holds s.mu.
func (s *Server) removeEndpoints(name string, eps []endpoint) bool {
	t := s.topics[name]
	if t == nil {
		return false
	}
	kept := t.endpoints[:0]
	for _, old := range t.endpoints {
		drop := false
		for _, e := range eps {
			drop = drop || (e.URL != "" && e.URL == old.URL) || (e.Name != "" && e.Name == old.Name)
		}
		if !drop {
			kept = append(kept, old)
		}
	}
	t.endpoints, t.updatedAt = kept, s.cfg.Now()
	if len(kept) == 0 {
		delete(s.topics, name)
	}
	s.jTopic(name)
	return true
}

// handleTopicHeaders is PATCH /v2/topics/{name} {"headers": {...}}: it
// replaces the group's default headers (docs/qstash-protocol.md §11). They
// must parse as publish headers, so a bad default fails here with 400
// rather than on every later publish. An empty object clears them.
func (s *Server) handleTopicHeaders(w http.ResponseWriter, r *http.Request, name string) {
	body, err := readBody(w, r, 1<<20)
	if err != nil {
		writeError(w, err)
		return
	}
	var req struct {
		Headers map[string]json.RawMessage `json:"headers"`
	}
	if err := json.Unmarshal(body, &req); err != nil || req.Headers == nil {
		writeError(w, errorf(http.StatusBadRequest, "invalid body: want {\"headers\":{\"Upstash-Retries\":\"3\",...}}"))
		return
	}
	h := http.Header{}
	for k, raw := range req.Headers {
		// A value may be a string or a list of strings.
		var one string
		var many []string
		switch {
		case json.Unmarshal(raw, &one) == nil:
			many = []string{one}
		case json.Unmarshal(raw, &many) == nil:
		default:
			writeError(w, errorf(http.StatusBadRequest, "header %q: want a string or an array of strings", k))
			return
		}
		ck := http.CanonicalHeaderKey(k)
		if hopHeaders[ck] {
			writeError(w, errorf(http.StatusBadRequest, "header %q cannot be a default", k))
			return
		}
		h[ck] = many
	}
	if _, err := parsePublishHeaders(h, s.limits(), s.cfg.Now()); err != nil {
		writeError(w, errorf(http.StatusBadRequest, "%s", err.Error()))
		return
	}
	s.mu.Lock()
	t := s.topics[name]
	if t != nil {
		t.headers, t.updatedAt = h, s.cfg.Now()
		s.jTopic(name)
	}
	s.mu.Unlock()
	if t == nil {
		writeError(w, errorf(http.StatusNotFound, "url group %s not found", name))
		return
	}
	w.WriteHeader(http.StatusOK)
}

// withTopicDefaults adds a URL group's default headers to a publish to it,
// under the request's own. The caller holds s.mu.
func (s *Server) withTopicDefaults(req *publishRequest) {
	t := s.topics[req.destination]
	if t == nil || len(t.headers) == 0 {
		return
	}
	h := req.header.Clone()
	if h == nil {
		h = http.Header{}
	}
	for k, vs := range t.headers {
		if _, set := h[k]; !set && h.Get(k) == "" {
			h[k] = vs
		}
	}
	req.header = h
}
