package qstashdev

import (
	"net/http"
	"slices"
	"time"
)

// The life of a message: admitted, gated by its queue and flow-control key,
// attempted, then delivered, retried, dead-lettered or cancelled
// (docs/qstash-protocol.md §6). Every function in this file is called with
// s.mu held.

// Message states as the logs API names them (docs/qstash-protocol.md §6.5).
const (
	stateCreated         = "CREATED"
	stateActive          = "ACTIVE"
	stateRetry           = "RETRY"
	stateError           = "ERROR"
	stateDelivered       = "DELIVERED"
	stateFailed          = "FAILED"
	stateCancelRequested = "CANCEL_REQUESTED"
	stateCancelled       = "CANCELLED"
)

// message is one delivery target of a publish (a URL-group publish makes one
// per endpoint). Fields above the blank line never change after creation,
// so delivery goroutines and views may read them without the lock; the
// fields below it are guarded by Server.mu.
type message struct {
	id         string
	url        string
	topic      string
	endpoint   string
	queueName  string
	method     string
	header     http.Header
	body       []byte
	retries    int
	retryDelay *retryExpr
	timeout    time.Duration
	callback   *callbackConfig
	failure    *callbackConfig
	flow       *flowConfig
	labels     []string
	redact     redaction
	scheduleID string
	callerIP   string
	createdAt  time.Time
	notBefore  time.Time
	origHeader http.Header  // publish config headers, replayed by DLQ retry
	isCallback bool         // carries a callback payload; fires no callbacks itself
	run        *workflowRun // the Workflow run it belongs to, if any
	stepIndex  int          // its entry in run.steps

	queue       *queue
	flowKey     *flowKey
	parent      *message // for callback messages: the message they report on
	children    int      // callback messages of this message still pending
	state       string
	attempts    int
	nextAt      time.Time // wall time of the next attempt
	timer       *timerItem
	inflight    bool
	cancelled   bool
	done        bool
	inQueueWait bool
	inFlowWait  bool
	queueSlot   bool
	flowSlot    bool
}

// admit registers a new message and schedules its first attempt.
func (s *Server) admit(m *message) {
	s.messages[m.id] = m
	s.pending++
	m.state = stateCreated
	s.jMessage(m)
	if m.queue != nil {
		m.queue.lag++
	}
	s.event(m, stateCreated, nil, "")
	if d := m.notBefore.Sub(s.cfg.Now()); d > 0 {
		m.nextAt = m.notBefore
		d = time.Duration(float64(d) * s.cfg.DelayScale)
		m.timer = &timerItem{at: time.Now().Add(d), kind: timerMessage, msg: m}
		s.addTimer(m.timer)
		return
	}
	s.ready(m)
}

// ready is called when an attempt of m is due.
func (s *Server) ready(m *message) {
	if m.done {
		return
	}
	if m.queue != nil && !m.queueSlot {
		m.inQueueWait = true
		m.queue.waiting = append(m.queue.waiting, m)
		s.pumpQueue(m.queue)
		return
	}
	s.attemptReady(m)
}

// attemptReady passes m through its flow-control gate, if any, to start.
func (s *Server) attemptReady(m *message) {
	if fk := m.flowKey; fk != nil {
		m.inFlowWait = true
		fk.waiting = append(fk.waiting, m)
		s.pumpFlow(fk)
		return
	}
	s.start(m)
}

// start launches one delivery attempt in its own goroutine.
func (s *Server) start(m *message) {
	if s.closed {
		return
	}
	m.inflight = true
	if !m.cancelled {
		m.state = stateActive
	}
	s.event(m, stateActive, nil, "")
	a := attempt{
		url: m.url, method: m.method, header: m.header, body: m.body,
		retried: m.attempts, timeout: m.timeout, key: s.curKey,
		messageID: m.id, topic: m.topic, scheduleID: m.scheduleID, callerIP: m.callerIP,
	}
	if m.run != nil {
		s.workflowAttempt(m, &a)
	}
	if a.timeout == 0 {
		a.timeout = s.cfg.DeliveryTimeout
	}
	s.deliveries.Add(1)
	s.spawn(func() {
		defer s.deliveries.Done()
		res := s.deliver(a)
		s.mu.Lock()
		defer s.mu.Unlock()
		s.finishAttempt(m, res)
	})
}

// finishAttempt classifies an attempt's outcome
// (docs/qstash-protocol.md §6.1) and decides what comes next: done, retry,
// or dead letter.
func (s *Server) finishAttempt(m *message, res *attemptResult) {
	m.inflight = false
	m.attempts++
	if m.flowSlot {
		m.flowSlot = false
		m.flowKey.inflight--
		defer s.pumpFlow(m.flowKey)
	}
	if m.cancelled {
		s.finalize(m, stateCancelled)
		return
	}
	if m.callback != nil && !m.isCallback {
		s.spawnCallback(m, m.callback, res, "")
	}
	if res.success() {
		if s.debug() {
			s.log.Debug("delivered", "messageId", m.id, "url", m.url, "status", res.status, "retried", m.attempts-1)
		}
		s.event(m, stateDelivered, res, "")
		s.finalize(m, stateDelivered)
		return
	}
	errText := res.errorText()
	nonRetryable := res.status == 489 && equalFoldTrim(res.header.Get("Upstash-NonRetryable-Error"), "true")
	if nonRetryable || m.attempts > m.retries {
		s.event(m, stateError, res, errText)
		dlqID := s.deadLetter(m, res)
		s.log.Info("dead-lettered", "messageId", m.id, "url", m.url, "status", res.status,
			"attempts", m.attempts, "nonRetryable", nonRetryable, "dlqId", dlqID)
		if fc := m.failureCallback(); fc != nil && !m.isCallback {
			s.spawnCallback(m, fc, res, dlqID)
		}
		s.event(m, stateFailed, res, errText)
		s.finalize(m, stateFailed)
		return
	}
	wait := s.backoff(m, res)
	m.state = stateRetry
	m.nextAt = s.cfg.Now().Add(wait)
	s.jAttempt(m)
	s.event(m, stateError, res, errText)
	s.event(m, stateRetry, res, errText)
	if s.debug() {
		s.log.Debug("retry scheduled", "messageId", m.id, "status", res.status, "retried", m.attempts, "in", wait)
	}
	m.timer = &timerItem{at: time.Now().Add(wait), kind: timerMessage, msg: m}
	s.addTimer(m.timer)
}

// failureCallback is m's own failure callback, or else its Workflow run's.
// The caller holds s.mu.
func (m *message) failureCallback() *callbackConfig {
	if m.failure == nil && m.run != nil {
		return m.run.failure
	}
	return m.failure
}

// finalize ends m's life: it leaves every wait list and index, and frees its
// queue slot once its callbacks are done too.
func (s *Server) finalize(m *message, state string) {
	if m.done {
		return
	}
	m.done = true
	m.state = state
	s.removeTimer(m.timer)
	m.timer = nil
	if m.inQueueWait {
		m.queue.waiting = slices.DeleteFunc(m.queue.waiting, func(x *message) bool { return x == m })
		m.inQueueWait = false
	}
	if m.inFlowWait {
		m.flowKey.waiting = slices.DeleteFunc(m.flowKey.waiting, func(x *message) bool { return x == m })
		m.inFlowWait = false
	}
	delete(s.messages, m.id)
	s.pending--
	s.jDone(m)
	defer s.notifyIdle()
	if m.queue != nil {
		m.queue.lag--
	}
	if state == stateCancelled {
		s.event(m, stateCancelled, nil, "")
	}
	if m.scheduleID != "" {
		if sch := s.schedules[m.scheduleID]; sch != nil {
			if _, ok := sch.lastStates[m.id]; ok {
				sch.lastStates[m.id] = scheduleStateOf(state)
			}
		}
	}
	s.releaseQueueSlot(m)
	if p := m.parent; p != nil {
		m.parent = nil
		p.children--
		s.releaseQueueSlot(p)
	}
}

// cancel stops m. An attempt already in flight cannot be recalled; its
// outcome is ignored and the message ends as cancelled.
func (s *Server) cancel(m *message) {
	if m.done {
		return
	}
	m.cancelled = true
	if m.inflight {
		m.state = stateCancelRequested
		s.event(m, stateCancelRequested, nil, "")
		return
	}
	s.finalize(m, stateCancelled)
}

// scheduleStateOf maps a final message state to the schedule's
// lastScheduleStates vocabulary.
func scheduleStateOf(state string) string {
	switch state {
	case stateDelivered:
		return "SUCCESS"
	case stateFailed, stateCancelled:
		return "FAIL"
	default:
		return "IN_PROGRESS"
	}
}
