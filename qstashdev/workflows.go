package qstashdev

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Upstash Workflow (docs/qstash-protocol.md §18): the Workflow SDKs run a
// workflow as a chain of messages to the workflow's own URL, each carrying
// Upstash-Workflow-RunId. QStash keeps every message body of a run and
// delivers, instead of a message's own body, the run's history up to and
// including that message: a JSON array of {messageId, body (base64),
// callType}, whose first entry is the run's initial payload. A run ends
// with DELETE /v2/workflows/runs/{id}; its pending messages are cancelled
// and later publishes into it are refused.

// Workflow headers (docs/qstash-protocol.md §18).
const (
	workflowRunIDHeader     = "Upstash-Workflow-Runid"
	workflowInitHeader      = "Upstash-Workflow-Init"
	workflowCallTypeHeader  = "Upstash-Workflow-Calltype"
	workflowCreatedAtHeader = "Upstash-Workflow-Createdat"
	workflowURLHeader       = "Upstash-Workflow-Url"
)

// maxWorkflowRuns bounds the runs kept (live and ended); the oldest are
// forgotten first.
const maxWorkflowRuns = 100_000

// workflowRun is one run's history. Guarded by Server.mu.
type workflowRun struct {
	id        string
	url       string
	createdAt time.Time
	steps     []rawStep
	ended     bool
	// failure is the run's failure callback: the SDK sets it on the
	// trigger only, and it applies to every message of the run that dies.
	// failureHeader holds the headers it was parsed from, for the journal.
	failure       *callbackConfig
	failureHeader http.Header
}

// rawStep is one entry of a run's history as the SDKs parse it.
type rawStep struct {
	MessageID string `json:"messageId"`
	Body      string `json:"body"`
	CallType  string `json:"callType"`
}

// workflowRunOf returns the run a publish belongs to (creating it), or nil
// for a message outside any workflow. A run that has ended refuses new
// messages with 400, which the SDKs read as "the run was cancelled". The
// caller holds s.mu.
func (s *Server) workflowRunOf(req publishRequest, isURL bool, failure *callbackConfig) (*workflowRun, error) {
	id := strings.TrimSpace(req.header.Get(workflowRunIDHeader))
	if id == "" {
		return nil, nil
	}
	if !isURL {
		return nil, errorf(http.StatusBadRequest, "a workflow message must be published to a URL, not a URL group")
	}
	if !validName(id) {
		return nil, errorf(http.StatusBadRequest, "invalid %s %q", workflowRunIDHeader, id)
	}
	run := s.runs[id]
	if run != nil && run.ended {
		return nil, errorf(http.StatusBadRequest, "workflow run %s has ended", id)
	}
	if run == nil {
		u := req.header.Get(workflowURLHeader)
		if u == "" {
			u = req.destination
		}
		run = &workflowRun{id: id, url: u, createdAt: s.cfg.Now()}
		s.runs[id] = run
		s.runOrder = append(s.runOrder, id)
		if failure != nil {
			run.failure, run.failureHeader = failure, failureHeaders(req.header)
		}
		s.jRun(run)
		for len(s.runOrder) > maxWorkflowRuns {
			delete(s.runs, s.runOrder[0])
			s.runOrder = s.runOrder[1:]
		}
	}
	return run, nil
}

// failureHeaders keeps the Upstash-Failure-Callback* headers of h.
func failureHeaders(h http.Header) http.Header {
	out := http.Header{}
	for k, vs := range h {
		if hasPrefixFold(k, "Upstash-Failure-Callback") {
			out[k] = vs
		}
	}
	return out
}

// workflowDuplicate is the answer to a second trigger of a run that already
// has its initial message: the SDKs report it as "already exists".
func workflowDuplicate(run *workflowRun, req publishRequest) (any, bool) {
	if run == nil || len(run.steps) == 0 || !strings.EqualFold(req.header.Get(workflowInitHeader), "true") {
		return nil, false
	}
	return pubResp{MessageID: run.steps[0].MessageID, URL: req.destination, Deduplicated: true}, true
}

// appendStep records m's body in its run's history. The caller holds s.mu.
func (s *Server) appendStep(run *workflowRun, m *message, req publishRequest) int {
	ct := strings.TrimSpace(req.header.Get(workflowCallTypeHeader))
	if ct == "" {
		ct = "step"
	}
	run.steps = append(run.steps, rawStep{MessageID: m.id, Body: base64.StdEncoding.EncodeToString(m.body), CallType: ct})
	s.jStep(run)
	return len(run.steps) - 1
}

// workflowAttempt replaces a workflow message's body with its run's history
// up to the message, and adds Upstash-Workflow-CreatedAt. The caller holds
// s.mu.
func (s *Server) workflowAttempt(m *message, a *attempt) {
	run := m.run
	if run == nil || run.ended || m.stepIndex >= len(run.steps) {
		return
	}
	body, err := json.Marshal(run.steps[:m.stepIndex+1])
	if err != nil {
		return
	}
	a.body = body
	h := m.header.Clone()
	h.Set(workflowCreatedAtHeader, strconv.FormatInt(run.createdAt.UnixMilli(), 10))
	a.header = h
}

// endRun ends a run: its pending messages are cancelled (except, unless
// all is set, attempts in flight: the SDK ends a run from inside the last
// step's delivery) and its history is dropped. The caller holds s.mu.
func (s *Server) endRun(run *workflowRun, all bool) {
	run.ended = true
	run.steps = nil
	s.jRunEnded(run.id)
	for _, m := range s.messages {
		if m.run == run && (all || !m.inflight) {
			s.cancel(m)
		}
	}
}

func (s *Server) routeWorkflows(w http.ResponseWriter, r *http.Request, rest string) {
	sub, id, _ := strings.Cut(rest, "/")
	if !strings.EqualFold(sub, "runs") || strings.Contains(id, "/") {
		writeError(w, errNotFound)
		return
	}
	switch {
	case id == "" && r.Method == http.MethodDelete:
		s.handleRunsCancel(w, r)
	case id != "" && r.Method == http.MethodDelete:
		cancel := strings.EqualFold(r.URL.Query().Get("cancel"), "true")
		s.mu.Lock()
		run := s.runs[id]
		if run != nil && !run.ended {
			s.endRun(run, cancel)
		} else {
			run = nil
		}
		s.mu.Unlock()
		if run == nil {
			writeError(w, errorf(http.StatusNotFound, "workflow run %s not found", id))
			return
		}
		s.log.Debug("workflow run ended", "workflowRunId", id, "cancel", cancel)
		w.WriteHeader(http.StatusOK)
	case id != "" && r.Method == http.MethodGet:
		// The SDKs' lazy fetch of a run's history.
		s.mu.Lock()
		run := s.runs[id]
		var steps []rawStep
		if run != nil && !run.ended {
			steps = append([]rawStep{}, run.steps...)
		}
		s.mu.Unlock()
		if steps == nil {
			writeError(w, errorf(http.StatusNotFound, "workflow run %s not found", id))
			return
		}
		writeJSON(w, http.StatusOK, steps)
	default:
		writeError(w, errMethod)
	}
}

// handleRunsCancel is DELETE /v2/workflows/runs: cancel the runs listed in
// workflowRunIds, or else those matching workflowUrl (a prefix, exact with
// workflowUrlExactMatch=true), fromDate and toDate; no filter cancels
// every live run. count caps how many.
func (s *Server) handleRunsCancel(w http.ResponseWriter, r *http.Request) {
	ids, err := idsFromRequest(w, r, "workflowRunIds")
	if err != nil {
		writeError(w, err)
		return
	}
	q := r.URL.Query()
	count, err := countParam(q, 0, 1000)
	if err != nil {
		writeError(w, err)
		return
	}
	prefix, exact := q.Get("workflowUrl"), strings.EqualFold(q.Get("workflowUrlExactMatch"), "true")
	from, _ := strconv.ParseInt(q.Get("fromDate"), 10, 64)
	to, _ := strconv.ParseInt(q.Get("toDate"), 10, 64)
	s.mu.Lock()
	var victims []*workflowRun
	if len(ids) > 0 {
		for _, id := range ids {
			if run := s.runs[id]; run != nil && !run.ended {
				victims = append(victims, run)
			}
		}
	} else {
		for _, id := range s.runOrder {
			run := s.runs[id]
			if run == nil || run.ended {
				continue
			}
			created := run.createdAt.UnixMilli()
			if (prefix == "" || (exact && run.url == prefix) || (!exact && strings.HasPrefix(run.url, prefix))) &&
				(from == 0 || created >= from) && (to == 0 || created <= to) {
				victims = append(victims, run)
			}
		}
	}
	if count > 0 && len(victims) > count {
		victims = victims[:count]
	}
	for _, run := range victims {
		s.endRun(run, true)
	}
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]int{"cancelled": len(victims)})
}
