package qstashdev

import (
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
)

// pubResp is the publish answer for one message
// (docs/qstash-protocol.md §3.5).
type pubResp struct {
	MessageID    string `json:"messageId"`
	URL          string `json:"url,omitempty"`
	Deduplicated bool   `json:"deduplicated,omitempty"`
}

// publishRequest is a message to create, however it arrived (publish,
// enqueue, batch item, schedule trigger, DLQ retry).
type publishRequest struct {
	destination string
	queueName   string
	header      http.Header
	body        []byte
	callerIP    string
	scheduleID  string
}

func (s *Server) limits() parseLimits {
	return parseLimits{maxRetries: s.cfg.MaxRetries, maxTimeout: s.cfg.DeliveryTimeout}
}

// checkDestination classifies a destination: a URL (isURL) or a URL-group
// name; anything else is the real service's "invalid scheme" error.
func checkDestination(dest string) (isURL bool, err error) {
	if validDestinationURL(dest) {
		return true, nil
	}
	if dest == "" || hasPrefixFold(dest, "http:") || hasPrefixFold(dest, "https:") || !validName(dest) {
		return false, errorf(http.StatusBadRequest, "invalid destination url: endpoint has invalid scheme, add http:// or https://")
	}
	return false, nil
}

// publish creates the message(s) of req and returns the answer to send:
// a pubResp for a URL, a []pubResp for a URL group, and 202 on a dedup hit.
// It takes s.mu itself.
func (s *Server) publish(req publishRequest) (any, int, error) {
	if !validDestinationURL(req.destination) {
		s.mu.Lock()
		s.withTopicDefaults(&req)
		s.mu.Unlock()
	}
	p, err := s.prepare(req)
	if err != nil {
		return nil, 0, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.commit(p)
}

// preparedPublish is a publish request parsed and checked, ready to commit.
type preparedPublish struct {
	req       publishRequest
	opts      *publishOptions
	isURL     bool
	dedupKey  string
	now       time.Time
	notBefore time.Time
	orig      http.Header
}

// prepare parses and checks req. It reads no Server state but cfg, so it
// needs no lock.
func (s *Server) prepare(req publishRequest) (*preparedPublish, error) {
	now := s.cfg.Now()
	opts, err := parsePublishHeaders(req.header, s.limits(), now)
	if err != nil {
		return nil, errorf(http.StatusBadRequest, "%s", err.Error())
	}
	if int64(len(req.body)) > s.cfg.MaxBodyBytes {
		return nil, errTooLarge(s.cfg.MaxBodyBytes)
	}
	if req.queueName != "" && !validName(req.queueName) {
		return nil, errorf(http.StatusBadRequest, "invalid queue name %q: only letters, digits, '-', '.', '_' allowed", req.queueName)
	}
	isURL, err := checkDestination(req.destination)
	if err != nil {
		return nil, err
	}
	p := &preparedPublish{req: req, opts: opts, isURL: isURL, now: now, notBefore: now.Add(opts.delay), orig: configHeaders(req.header)}
	switch {
	case opts.dedupID != "":
		p.dedupKey = "id:" + opts.dedupID
	case opts.contentDedup:
		p.dedupKey = "content:" + contentHash(req.destination, opts.header, req.body)
	}
	if opts.hasNotBefore { // wins over Upstash-Delay (docs/qstash-protocol.md §3.3)
		p.notBefore = opts.notBefore
	}
	return p, nil
}

// commit creates p's message(s): one for a URL, one per endpoint for a URL
// group, none for a duplicate. The caller holds s.mu.
func (s *Server) commit(p *preparedPublish) (any, int, error) {
	req, opts := p.req, p.opts
	if s.closed {
		return nil, 0, errorf(http.StatusServiceUnavailable, "server is shutting down")
	}
	targets := []endpoint{{URL: req.destination}}
	topicName := ""
	if !p.isURL {
		t := s.topics[req.destination]
		if t == nil {
			if strings.Contains(req.destination, ".") {
				return nil, 0, errorf(http.StatusBadRequest, "invalid destination url: endpoint has invalid scheme, add http:// or https://")
			}
			return nil, 0, errorf(http.StatusNotFound, "url group %s not found", req.destination)
		}
		targets, topicName = slices.Clone(t.endpoints), t.name
	}
	if p.dedupKey != "" {
		if prev, ok := s.lookupDedup(p.dedupKey); ok {
			s.log.Debug("deduplicated", "destination", req.destination)
			return markDeduplicated(prev), http.StatusAccepted, nil
		}
	}
	run, err := s.workflowRunOf(req, p.isURL, opts.failure)
	if err != nil {
		return nil, 0, err
	}
	if dup, ok := workflowDuplicate(run, req); ok {
		return dup, http.StatusAccepted, nil
	}
	if s.pending+len(targets) > s.cfg.MaxPendingMessages {
		return nil, 0, errorf(http.StatusTooManyRequests, "too many pending messages (limit %d)", s.cfg.MaxPendingMessages)
	}
	var q *queue
	if req.queueName != "" {
		q = s.getQueue(req.queueName)
	}
	var fk *flowKey
	if opts.flow != nil {
		fk = s.getFlowKey(opts.flow)
	}
	resps := make([]pubResp, 0, len(targets))
	for _, t := range targets {
		m := &message{
			id: fastID("msg_", 28), url: t.URL, topic: topicName, endpoint: t.Name, queueName: req.queueName,
			method: opts.method, header: opts.header, body: req.body, retries: opts.retries, retryDelay: opts.retryDelay,
			timeout: opts.timeout, callback: opts.callback, failure: opts.failure, flow: opts.flow, labels: opts.labels,
			redact: opts.redact, scheduleID: req.scheduleID, callerIP: req.callerIP, createdAt: p.now, notBefore: p.notBefore,
			origHeader: p.orig, queue: q, flowKey: fk, run: run,
		}
		if run != nil {
			m.stepIndex = s.appendStep(run, m, req)
		}
		s.admit(m)
		resps = append(resps, pubResp{MessageID: m.id, URL: t.URL})
		if s.debug() {
			s.log.Debug("published", "messageId", m.id, "url", t.URL, "queue", req.queueName, "notBefore", p.notBefore)
		}
	}
	var resp any = resps[0]
	if !p.isURL {
		resp = resps
	}
	if p.dedupKey != "" {
		s.rememberDedup(p.dedupKey, resp)
	}
	return resp, http.StatusOK, nil
}

// configHeaders keeps what a DLQ retry needs to republish the message.
func configHeaders(h http.Header) http.Header {
	out := http.Header{}
	for k, vs := range h {
		ck := http.CanonicalHeaderKey(k)
		if hopHeaders[ck] || hasPrefixFold(ck, "Upstash-Telemetry-") {
			continue
		}
		out[ck] = vs
	}
	return out
}

// destinationFromPath rebuilds the destination of /v2/publish/<dest> and
// /v2/enqueue/<q>/<dest> (docs/qstash-protocol.md §2.2): SDKs append it
// raw, so it arrives with "://" in the path and its query string as the
// request's own; a fully percent-encoded destination and a collapsed
// "https:/host" are accepted too. upstash-* query parameters become config
// headers in h (docs/qstash-protocol.md §3.4); qstash_token is dropped.
func destinationFromPath(escaped, rawQuery string, h http.Header) (string, error) {
	d := escaped
	if !hasPrefixFold(d, "http://") && !hasPrefixFold(d, "https://") && strings.Contains(d, "%") {
		// A percent-encoded destination ("https%3A%2F%2F..." or, from
		// url.PathEscape, "https:%2F%2F..."): decode it whole.
		if u, err := url.PathUnescape(d); err == nil && (hasPrefixFold(u, "http://") || hasPrefixFold(u, "https://")) {
			d = u
		}
	}
	for _, scheme := range []string{"https:/", "http:/"} {
		if hasPrefixFold(d, scheme) && !hasPrefixFold(d, scheme+"/") {
			d = d[:len(scheme)] + "/" + d[len(scheme):]
		}
	}
	var kept []string
	for piece := range strings.SplitSeq(rawQuery, "&") {
		if piece == "" {
			continue
		}
		k, v, _ := strings.Cut(piece, "=")
		key, err := url.QueryUnescape(k)
		if err != nil {
			key = k
		}
		switch {
		case strings.EqualFold(key, "qstash_token"):
		case hasPrefixFold(key, "upstash-"):
			val, err := url.QueryUnescape(v)
			if err != nil {
				return "", errorf(http.StatusBadRequest, "invalid query parameter %q", key)
			}
			if h.Get(key) == "" {
				h.Set(key, val)
			}
		default:
			// Kept byte for byte: the destination's URL is signed as is.
			kept = append(kept, piece)
		}
	}
	if len(kept) > 0 {
		sep := "?"
		if strings.Contains(d, "?") {
			sep = "&"
		}
		d += sep + strings.Join(kept, "&")
	}
	return d, nil
}

func (s *Server) handlePublish(w http.ResponseWriter, r *http.Request, rest string) {
	if rest == "" {
		writeError(w, errorf(http.StatusBadRequest, "missing destination"))
		return
	}
	s.publishFromRequest(w, r, rest, "")
}

func (s *Server) handleEnqueue(w http.ResponseWriter, r *http.Request, rest string) {
	qname, dest, _ := strings.Cut(rest, "/")
	if qname == "" || dest == "" {
		writeError(w, errorf(http.StatusBadRequest, "want /v2/enqueue/{queueName}/{destination}"))
		return
	}
	if un, err := url.PathUnescape(qname); err == nil {
		qname = un
	}
	s.publishFromRequest(w, r, dest, qname)
}

func (s *Server) publishFromRequest(w http.ResponseWriter, r *http.Request, rest, queueName string) {
	h := r.Header.Clone()
	dest, err := destinationFromPath(rest, r.URL.RawQuery, h)
	if err != nil {
		writeError(w, err)
		return
	}
	body, err := readBody(w, r, s.cfg.MaxBodyBytes)
	if err != nil {
		writeError(w, err)
		return
	}
	resp, status, err := s.publish(publishRequest{destination: dest, queueName: queueName, header: h, body: body, callerIP: callerIP(r)})
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, status, resp)
}

// batchItem is one element of POST /v2/batch (docs/qstash-protocol.md §3.6).
type batchItem struct {
	Destination string            `json:"destination"`
	Headers     map[string]string `json:"headers"`
	Body        *string           `json:"body"`
	Queue       string            `json:"queue"`
}

// batchBodyFactor bounds a whole batch request relative to MaxBodyBytes.
const batchBodyFactor = 16

func (s *Server) handleBatch(w http.ResponseWriter, r *http.Request) {
	raw, err := readBody(w, r, s.cfg.MaxBodyBytes*batchBodyFactor)
	if err != nil {
		writeError(w, err)
		return
	}
	var items []batchItem
	if err := json.Unmarshal(raw, &items); err != nil {
		writeError(w, errorf(http.StatusBadRequest, "invalid batch body: want a JSON array of {destination, headers, body, queue}: %v", err))
		return
	}
	if len(items) == 0 {
		writeError(w, errorf(http.StatusBadRequest, "empty batch"))
		return
	}
	ip := callerIP(r)
	out := make([]any, len(items))
	for i, it := range items {
		h := http.Header{}
		for k, v := range it.Headers {
			h.Set(k, v)
		}
		var body []byte
		if it.Body != nil {
			body = []byte(*it.Body)
		}
		// A failing item gets an error object in its slot; the others are
		// still sent (docs/qstash-protocol.md §3.6: the real per-item error
		// shape is undocumented).
		resp, _, err := s.publish(publishRequest{destination: strings.TrimSpace(it.Destination), queueName: it.Queue, header: h, body: body, callerIP: ip})
		if err != nil {
			out[i] = map[string]string{"error": err.Error()}
			continue
		}
		out[i] = resp
	}
	writeJSON(w, http.StatusOK, out)
}
