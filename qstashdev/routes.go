package qstashdev

import (
	"fmt"
	"net/http"
	"net/url"
	"runtime/debug"
	"strings"
)

// serveHTTP routes on the raw path: Go's ServeMux would clean
// "/v2/publish/https://x" into "https:/x" with a 307
// (docs/qstash-protocol.md §2.2). Resource names match case-insensitively:
// qstash-go uses /v2/Schedules (docs/qstash-protocol.md §2.4). Each
// resource's handlers live in the file named after it.
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
	if s.jr != nil {
		// What a client is told was accepted is in the journal first.
		w = &syncWriter{ResponseWriter: w, s: s}
	}
	p := strings.TrimPrefix(r.URL.EscapedPath(), "/")
	ver, after, _ := strings.Cut(p, "/")
	if !strings.EqualFold(ver, "v2") && ver != devPrefix {
		writeError(w, errNotFound)
		return
	}
	if !s.authorized(r) {
		writeError(w, errorf(http.StatusUnauthorized, "unauthorized: missing or invalid token"))
		return
	}
	if ver == devPrefix {
		s.routeDev(w, r, after)
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
	case "rotate": // qstash-go's /v2/keys/rotate (docs/qstash-protocol.md §2.4)
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
	case "workflows":
		s.routeWorkflows(w, r, unescape(rest))
	case "flowcontrol":
		s.routeFlowControl(w, r, unescape(rest))
	case "globalparallelism":
		if m != http.MethodGet {
			writeError(w, errMethod)
			return
		}
		s.handleGlobalParallelism(w)
	default:
		writeError(w, errNotFound)
	}
}

// unescape decodes a path remainder, keeping it as is when it is not valid
// percent-encoding.
func unescape(s string) string {
	if u, err := url.PathUnescape(s); err == nil {
		return u
	}
	return s
}

// viewer is a stored resource with a JSON view.
type viewer[V any] interface{ view() V }

// serveView answers a GET of one item: the view of items[id], taken under
// s.mu, or a 404 naming what was not found.
func serveView[T viewer[V], V any](s *Server, w http.ResponseWriter, items map[string]T, what, id string) {
	s.mu.Lock()
	it, ok := items[id]
	var v V
	if ok {
		v = it.view()
	}
	s.mu.Unlock()
	if !ok {
		writeError(w, errorf(http.StatusNotFound, "%s %s not found", what, id))
		return
	}
	writeJSON(w, http.StatusOK, v)
}

// views returns the views of every item, taken under s.mu, never nil.
func views[T viewer[V], V any](s *Server, items map[string]T) []V {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]V, 0, len(items))
	for _, it := range items {
		out = append(out, it.view())
	}
	return out
}
