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
}

type endpoint struct {
	Name string `json:"name,omitempty"`
	URL  string `json:"url"`
}

type topicJSON struct {
	Name      string     `json:"name"`
	CreatedAt int64      `json:"createdAt"`
	UpdatedAt int64      `json:"updatedAt"`
	Endpoints []endpoint `json:"endpoints"`
}

func (t *topic) view() topicJSON {
	return topicJSON{Name: t.name, CreatedAt: t.createdAt.UnixMilli(), UpdatedAt: t.updatedAt.UnixMilli(),
		Endpoints: append([]endpoint{}, t.endpoints...)}
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
	return true
}
