package qstashdev

import (
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
)

// cronParser reads the 5-field cron of docs/qstash-protocol.md §12 with an optional CRON_TZ=
// prefix. Extensions for local testing: an optional leading seconds field
// (6 fields) and descriptors such as @every 2s or @hourly.
var cronParser = cron.NewParser(cron.SecondOptional | cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

type schedule struct {
	id          string
	cron        string
	spec        cron.Schedule
	destination string
	queueName   string
	header      http.Header // the create request's headers, replayed at every trigger
	body        []byte
	opts        *publishOptions // for display
	callerIP    string
	createdAt   time.Time
	paused      bool
	timer       *timerItem
	last, next  time.Time
	lastStates  map[string]string
}

// scheduleOnlyHeaders configure the schedule itself, not its messages.
var scheduleOnlyHeaders = []string{"Upstash-Cron", "Upstash-Schedule-Id", "Upstash-Queue-Name"}

func (s *Server) routeSchedules(w http.ResponseWriter, r *http.Request, rest string) {
	id, action, _ := strings.Cut(unescape(rest), "/")
	isAction := validName(id) && (strings.EqualFold(action, "pause") || strings.EqualFold(action, "resume"))
	switch {
	case rest == "" && r.Method == http.MethodGet:
		out := views(s, s.schedules)
		slices.SortFunc(out, func(a, b scheduleJSON) int { return int(a.CreatedAt - b.CreatedAt) })
		writeJSON(w, http.StatusOK, out)
	case isAction && (r.Method == http.MethodPatch || r.Method == http.MethodPost):
		// OAS says POST, every SDK sends PATCH: accept both
		// (docs/qstash-protocol.md §2.4).
		pause := strings.EqualFold(action, "pause")
		s.mu.Lock()
		sch := s.schedules[id]
		if sch != nil {
			sch.paused = pause
			s.removeTimer(sch.timer)
			sch.timer = nil
			if !pause {
				s.armSchedule(sch)
			}
			s.jSchedule(sch)
		}
		s.mu.Unlock()
		if sch == nil {
			writeError(w, errorf(http.StatusNotFound, "schedule %s not found", id))
			return
		}
		s.log.Info("schedule "+strings.ToLower(action)+"d", "scheduleId", id)
		w.WriteHeader(http.StatusOK)
	case rest != "" && r.Method == http.MethodPost:
		s.handleScheduleCreate(w, r, rest)
	case rest != "" && action == "" && r.Method == http.MethodGet:
		serveView(s, w, s.schedules, "schedule", id)
	case rest != "" && action == "" && r.Method == http.MethodDelete:
		s.mu.Lock()
		sch := s.schedules[id]
		if sch != nil {
			s.removeTimer(sch.timer)
			delete(s.schedules, id)
			s.jScheduleDeleted(id)
		}
		s.mu.Unlock()
		if sch == nil {
			writeError(w, errorf(http.StatusNotFound, "schedule %s not found", id))
			return
		}
		s.log.Info("schedule deleted", "scheduleId", id)
		w.WriteHeader(http.StatusOK)
	case rest == "" || isAction || action == "":
		writeError(w, errMethod)
	default:
		writeError(w, errNotFound)
	}
}

func (s *Server) handleScheduleCreate(w http.ResponseWriter, r *http.Request, rest string) {
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
	now := s.cfg.Now()
	opts, err := parsePublishHeaders(h, s.limits(), now)
	if err != nil {
		writeError(w, errorf(http.StatusBadRequest, "%s", err.Error()))
		return
	}
	if opts.cron == "" {
		writeError(w, errorf(http.StatusBadRequest, "Upstash-Cron header is required"))
		return
	}
	spec, err := cronParser.Parse(opts.cron)
	if err != nil {
		writeError(w, errorf(http.StatusBadRequest, "invalid Upstash-Cron %q: %v", opts.cron, err))
		return
	}
	if opts.scheduleID != "" && !validName(opts.scheduleID) {
		writeError(w, errorf(http.StatusBadRequest, "invalid schedule id %q: only letters, digits, '-', '.', '_' allowed", opts.scheduleID))
		return
	}
	if opts.queueName != "" && !validName(opts.queueName) {
		writeError(w, errorf(http.StatusBadRequest, "invalid queue name %q", opts.queueName))
		return
	}
	if _, err := checkDestination(dest); err != nil {
		writeError(w, err)
		return
	}
	for _, k := range scheduleOnlyHeaders {
		h.Del(k)
	}
	sch := &schedule{
		id: opts.scheduleID, cron: opts.cron, spec: spec, destination: dest, queueName: opts.queueName,
		header: configHeaders(h), body: body, opts: opts, callerIP: callerIP(r), createdAt: now,
		lastStates: map[string]string{},
	}
	if sch.id == "" {
		sch.id = randomID("scd_", 28)
	}
	s.mu.Lock()
	full := false
	if old := s.schedules[sch.id]; old != nil {
		// An existing id is fully replaced (docs/qstash-protocol.md §12).
		s.removeTimer(old.timer)
	} else {
		full = len(s.schedules) >= s.cfg.MaxSchedules
	}
	if !full {
		s.schedules[sch.id] = sch
		s.armSchedule(sch)
		s.jSchedule(sch)
	}
	s.mu.Unlock()
	if full {
		writeError(w, errorf(http.StatusPreconditionFailed, "too many schedules (limit %d)", s.cfg.MaxSchedules))
		return
	}
	s.log.Info("schedule created", "scheduleId", sch.id, "cron", sch.cron, "destination", dest)
	writeJSON(w, http.StatusOK, map[string]string{"scheduleId": sch.id})
}

// armSchedule puts the schedule's next fire time on the timer heap; the
// caller holds s.mu.
func (s *Server) armSchedule(sch *schedule) {
	next := sch.spec.Next(s.cfg.Now())
	if next.IsZero() {
		return
	}
	sch.next = next
	sch.timer = &timerItem{at: s.monoAt(next), kind: timerSchedule, sch: sch}
	s.addTimer(sch.timer)
}

// fireSchedule publishes the schedule's message(s) and re-arms it. Called
// by the scheduler with s.mu held, so a trigger and a pause or delete never
// interleave: once a pause has returned, the schedule creates nothing more.
func (s *Server) fireSchedule(sch *schedule) {
	if s.schedules[sch.id] != sch || sch.paused || s.closed {
		return
	}
	sch.last = sch.next
	s.armSchedule(sch)
	req := publishRequest{destination: sch.destination, queueName: sch.queueName, header: sch.header.Clone(),
		body: sch.body, callerIP: sch.callerIP, scheduleID: sch.id}
	if !validDestinationURL(req.destination) {
		s.withTopicDefaults(&req)
	}
	p, err := s.prepare(req)
	var resp any
	if err == nil {
		resp, _, err = s.commit(p)
	}
	if err != nil {
		s.log.Warn("schedule trigger failed", "scheduleId", sch.id, "err", err)
		return
	}
	clear(sch.lastStates)
	var ids []pubResp
	switch v := resp.(type) {
	case pubResp:
		ids = append(ids, v)
	case []pubResp:
		ids = v
	}
	for _, p := range ids {
		state := "IN_PROGRESS"
		if _, live := s.messages[p.MessageID]; !live {
			state = "SUCCESS"
		}
		sch.lastStates[p.MessageID] = state
	}
}

type scheduleJSON struct {
	ScheduleID            string            `json:"scheduleId"`
	Cron                  string            `json:"cron"`
	Destination           string            `json:"destination"`
	CreatedAt             int64             `json:"createdAt"`
	Method                string            `json:"method"`
	Header                http.Header       `json:"header,omitempty"`
	Body                  string            `json:"body,omitempty"`
	BodyBase64            string            `json:"bodyBase64,omitempty"`
	Retries               int               `json:"retries"`
	Delay                 int64             `json:"delay,omitempty"`
	Timeout               int64             `json:"timeout,omitempty"`
	Callback              string            `json:"callback,omitempty"`
	FailureCallback       string            `json:"failureCallback,omitempty"`
	CallbackHeader        http.Header       `json:"callbackHeader,omitempty"`
	FailureCallbackHeader http.Header       `json:"failureCallbackHeader,omitempty"`
	CallerIP              string            `json:"callerIP,omitempty"`
	CallerIPAlt           string            `json:"callerIp,omitempty"`
	IsPaused              bool              `json:"isPaused"`
	QueueName             string            `json:"queueName,omitempty"`
	FlowControlKey        string            `json:"flowControlKey,omitempty"`
	Parallelism           int               `json:"parallelism,omitempty"`
	Rate                  int               `json:"rate,omitempty"`
	Period                int64             `json:"period,omitempty"`
	RetryDelayExpression  string            `json:"retryDelayExpression,omitempty"`
	Label                 string            `json:"label,omitempty"`
	Labels                []string          `json:"labels,omitempty"`
	LastScheduleTime      int64             `json:"lastScheduleTime,omitempty"`
	NextScheduleTime      int64             `json:"nextScheduleTime,omitempty"`
	LastScheduleStates    map[string]string `json:"lastScheduleStates,omitempty"`
}

func (sch *schedule) view() scheduleJSON {
	o := sch.opts
	v := scheduleJSON{
		ScheduleID: sch.id, Cron: sch.cron, Destination: sch.destination, CreatedAt: sch.createdAt.UnixMilli(),
		Method: o.method, Header: redactHeader(o.header, o.redact), Retries: o.retries,
		Delay: int64(o.delay.Seconds()), Timeout: int64(o.timeout.Seconds()), CallerIP: sch.callerIP, CallerIPAlt: sch.callerIP,
		IsPaused: sch.paused, QueueName: sch.queueName, Labels: o.labels,
	}
	if len(v.Header) == 0 {
		v.Header = nil
	}
	if o.redact.body {
		v.Body = redacted(sch.body)
	} else {
		v.Body, v.BodyBase64 = textOrBase64(sch.body)
	}
	if o.callback != nil {
		v.Callback, v.CallbackHeader = o.callback.url, nonEmpty(o.callback.header)
	}
	if o.failure != nil {
		v.FailureCallback, v.FailureCallbackHeader = o.failure.url, nonEmpty(o.failure.header)
	}
	if o.flow != nil {
		v.FlowControlKey, v.Parallelism, v.Rate, v.Period = o.flow.key, o.flow.parallelism, o.flow.rate, int64(o.flow.period.Seconds())
	}
	if o.retryDelay != nil {
		v.RetryDelayExpression = o.retryDelay.src
	}
	if len(o.labels) > 0 {
		v.Label = o.labels[0]
	}
	if !sch.last.IsZero() {
		v.LastScheduleTime = sch.last.UnixMilli()
	}
	if !sch.paused && !sch.next.IsZero() {
		v.NextScheduleTime = sch.next.UnixMilli()
	}
	if len(sch.lastStates) > 0 {
		v.LastScheduleStates = make(map[string]string, len(sch.lastStates))
		for k, st := range sch.lastStates {
			v.LastScheduleStates[k] = st
		}
	}
	return v
}
