package qstashdev

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// Persistence (Config.DataDir): an append-only journal of JSON lines, one
// record per change of what a restart must keep — pending messages (with
// their attempt count and next attempt), dead letters, schedules, queues,
// URL groups, Workflow runs, flow-control keys' pauses and pins, and the
// signing keys. Records are appended
// under s.mu to an in-memory buffer; an API answer is written only after
// the buffer up to it reached the file (the answer's writer flushes first),
// so anything a client was told is accepted is in the operating system
// before the client hears it, and survives the process being killed. There
// is no fsync per record: an operating-system crash or power loss may lose
// the last records. Changes made by deliveries (attempt counts, outcomes,
// dead letters) are flushed by a background writer within milliseconds;
// a kill before that replays the message, which is then delivered again
// (at least once, as QStash promises). At start the journal is replayed
// and rewritten as a compact snapshot (temporary file, fsync, rename); it
// is compacted the same way when it grows to several times the live state.

// journalFile is the journal's name inside Config.DataDir.
const journalFile = "qstashdev.journal"

// compactAfter is the least number of records appended before the journal
// is compacted (also at least 4x the live records).
const compactAfter = 100_000

// journal is the open journal file and the records not yet written to it.
// Lock order: Server.mu, then mu; ioMu is never held while taking
// Server.mu or mu for long (see flush).
type journal struct {
	path string

	ioMu sync.Mutex // serializes file writes; held while a buffer is taken and written
	f    *os.File

	mu       sync.Mutex
	buf      bytes.Buffer
	appended uint64 // records appended so far
	written  uint64 // records known to be in the file
	snapshot []byte // a compacted journal to write instead of the file, when set
	since    int    // records appended since the last compaction
	live     int    // records in the last snapshot
	err      error  // first write error; reported once

	wake chan struct{}
	stop chan struct{}
	done chan struct{}
	// round is held by the background writer for each round; tests hold
	// it to pause the writer (export_test.go).
	round sync.Mutex
}

// record is one journal line. Op says which of the other fields is set.
type record struct {
	Op    string         `json:"op"`
	ID    string         `json:"id,omitempty"`
	Msg   *msgRecord     `json:"msg,omitempty"`
	DLQ   *dlqRecord     `json:"dlq,omitempty"`
	Sch   *schRecord     `json:"sch,omitempty"`
	Queue *queueRecord   `json:"queue,omitempty"`
	Topic *topicRecord   `json:"topic,omitempty"`
	Run   *runRecord     `json:"run,omitempty"`
	Step  *rawStep       `json:"step,omitempty"`
	Keys  *[2]string     `json:"keys,omitempty"`
	Att   *attemptRecord `json:"att,omitempty"`
	Flow  *flowRecord    `json:"flow,omitempty"`
}

// msgRecord is a pending message. A published message is rebuilt by
// parsing Orig again; a callback message (Orig nil) carries its settings.
type msgRecord struct {
	ID         string      `json:"id"`
	URL        string      `json:"url"`
	Topic      string      `json:"topic,omitempty"`
	Endpoint   string      `json:"endpoint,omitempty"`
	Queue      string      `json:"queue,omitempty"`
	Orig       http.Header `json:"orig,omitempty"`
	Method     string      `json:"method,omitempty"`
	Header     http.Header `json:"header,omitempty"`
	Retries    int         `json:"retries,omitempty"`
	RetryDelay string      `json:"retryDelay,omitempty"`
	Timeout    int64       `json:"timeout,omitempty"`
	Parent     string      `json:"parent,omitempty"`
	Body       []byte      `json:"body,omitempty"`
	ScheduleID string      `json:"scheduleId,omitempty"`
	CallerIP   string      `json:"callerIp,omitempty"`
	CreatedAt  time.Time   `json:"createdAt"`
	NotBefore  time.Time   `json:"notBefore"`
	Run        string      `json:"run,omitempty"`
	Step       int         `json:"step,omitempty"`
	Attempts   int         `json:"attempts,omitempty"`
	NextAt     time.Time   `json:"nextAt,omitzero"`
}

type attemptRecord struct {
	Attempts int       `json:"attempts"`
	NextAt   time.Time `json:"nextAt"`
}

type dlqRecord struct {
	ID     string      `json:"id"`
	At     time.Time   `json:"at"`
	Msg    msgRecord   `json:"msg"`
	Status int         `json:"status"`
	Header http.Header `json:"header,omitempty"`
	Body   []byte      `json:"body,omitempty"`
	Err    string      `json:"err,omitempty"`
}

type schRecord struct {
	ID          string      `json:"id"`
	Cron        string      `json:"cron"`
	Destination string      `json:"destination"`
	Queue       string      `json:"queue,omitempty"`
	Header      http.Header `json:"header,omitempty"`
	Body        []byte      `json:"body,omitempty"`
	CallerIP    string      `json:"callerIp,omitempty"`
	CreatedAt   time.Time   `json:"createdAt"`
	Paused      bool        `json:"paused,omitempty"`
}

type queueRecord struct {
	Name        string    `json:"name"`
	Parallelism int       `json:"parallelism"`
	Paused      bool      `json:"paused,omitempty"`
	CreatedAt   time.Time `json:"createdAt"`
}

type topicRecord struct {
	Name      string      `json:"name"`
	CreatedAt time.Time   `json:"createdAt"`
	Endpoints []endpoint  `json:"endpoints"`
	Headers   http.Header `json:"headers,omitempty"`
}

// flowRecord is what the management API set on a flow-control key
// (docs/qstash-protocol.md §10.3): paused, and the pinned settings. What
// messages ask for is not recorded: their own records bring it back.
type flowRecord struct {
	Key               string `json:"key"`
	Paused            bool   `json:"paused,omitempty"`
	PinnedParallelism int    `json:"pinnedParallelism,omitempty"`
	PinnedRate        int    `json:"pinnedRate,omitempty"`
	Period            int64  `json:"period,omitempty"` // of the pinned rate, ns
}

func flowRecordOf(fk *flowKey) *flowRecord {
	r := &flowRecord{Key: fk.key, Paused: fk.paused}
	if fk.pinnedParallelism {
		r.PinnedParallelism = fk.parallelism
	}
	if fk.pinnedRate {
		r.PinnedRate, r.Period = fk.rate, int64(fk.period)
	}
	return r
}

// managed reports whether the management API left state on fk that a
// restart must keep.
func (fk *flowKey) managed() bool { return fk.paused || fk.pinnedParallelism || fk.pinnedRate }

type runRecord struct {
	ID        string      `json:"id"`
	URL       string      `json:"url"`
	CreatedAt time.Time   `json:"createdAt"`
	Steps     []rawStep   `json:"steps,omitempty"`
	Failure   http.Header `json:"failure,omitempty"`
}

// complete reports whether r carries what its Op needs.
func (r record) complete() bool {
	switch r.Op {
	case "msg":
		return r.Msg != nil
	case "dlq":
		return r.DLQ != nil
	case "sch":
		return r.Sch != nil
	case "queue":
		return r.Queue != nil
	case "topic":
		return r.Topic != nil
	case "run":
		return r.Run != nil
	case "step":
		return r.Step != nil
	case "att":
		return r.Att != nil
	case "keys":
		return r.Keys != nil
	case "flow":
		return r.Flow != nil
	}
	return true
}

// openJournal replays dir's journal into s, rewrites it compacted, and
// starts the background writer. It runs in New, before the scheduler.
func (s *Server) openJournal(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	path := filepath.Join(dir, journalFile)
	recs, err := readJournal(path, s.log)
	if err != nil {
		return err
	}
	// Nothing else runs yet (no scheduler, no listener): the file I/O
	// under s.mu is safe here.
	s.mu.Lock()
	defer s.mu.Unlock()
	s.restore(recs)
	snap := s.snapshotLocked()
	j := &journal{path: path, wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	if j.f, err = writeSnapshot(path, snap); err != nil {
		return err
	}
	j.live = bytes.Count(snap, []byte{'\n'})
	s.jr = j
	go s.journalLoop()
	s.log.Info("data dir loaded", "dir", dir, "messages", len(s.messages), "dlq", len(s.dlq.byID), "schedules", len(s.schedules))
	return nil
}

// readJournal returns the records of path (none if it does not exist). A
// torn last line (the process was killed mid-write) ends the replay.
func readJournal(path string, log interface{ Warn(string, ...any) }) ([]record, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	defer f.Close()
	var recs []record
	r := bufio.NewReaderSize(f, 1<<20)
	for line := 1; ; line++ {
		b, err := r.ReadBytes('\n')
		if len(b) > 0 && b[len(b)-1] == '\n' {
			var rec record
			if jerr := json.Unmarshal(b, &rec); jerr != nil {
				log.Warn("journal: unreadable record, replay stops here", "line", line, "err", jerr)
				return recs, nil
			}
			recs = append(recs, rec)
		} else if len(b) > 0 {
			log.Warn("journal: torn last record ignored", "line", line)
		}
		if errors.Is(err, io.EOF) {
			return recs, nil
		}
		if err != nil {
			return nil, fmt.Errorf("data dir: read journal: %w", err)
		}
	}
}

// writeSnapshot replaces path with snap atomically and returns it open for
// appending.
func writeSnapshot(path string, snap []byte) (*os.File, error) {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	if _, err = f.Write(snap); err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		return nil, fmt.Errorf("data dir: write snapshot: %w", err)
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0o600)
}

// journalAppend adds rec to the journal buffer and wakes the writer. A
// no-op without DataDir. The caller holds s.mu.
func (s *Server) journalAppend(rec record) {
	j := s.jr
	if j == nil {
		return
	}
	b, err := json.Marshal(rec)
	if err != nil {
		s.log.Error("journal: encode", "op", rec.Op, "err", err)
		return
	}
	j.mu.Lock()
	j.buf.Write(b)
	j.buf.WriteByte('\n')
	j.appended++
	j.since++
	j.mu.Unlock()
	select {
	case j.wake <- struct{}{}:
	default:
	}
}

// journalSync returns once every record appended so far is in the file.
// The API calls it before answering (syncWriter).
func (s *Server) journalSync() {
	if j := s.jr; j != nil {
		j.mu.Lock()
		target := j.appended
		j.mu.Unlock()
		s.flushJournal(target)
	}
}

// flushJournal writes the buffer (or a pending snapshot, then the buffer)
// unless target records are already written. Taking the buffer and writing
// it happen under ioMu together, so records reach the file in the order
// they were appended.
func (s *Server) flushJournal(target uint64) {
	j := s.jr
	j.ioMu.Lock()
	defer j.ioMu.Unlock()
	j.mu.Lock()
	if j.written >= target && j.snapshot == nil {
		j.mu.Unlock()
		return
	}
	snap, data, hi := j.snapshot, bytes.Clone(j.buf.Bytes()), j.appended
	j.snapshot = nil
	j.buf.Reset()
	j.mu.Unlock()
	var err error
	if snap != nil {
		var f *os.File
		if f, err = writeSnapshot(j.path, snap); err == nil {
			j.f.Close()
			j.f = f
		}
	}
	if err == nil && len(data) > 0 {
		_, err = j.f.Write(data)
	}
	j.mu.Lock()
	j.written = hi
	if err != nil && j.err == nil {
		j.err = err
		s.log.Error("journal: write failed; state changes from now on may not survive a restart", "err", err)
	}
	j.mu.Unlock()
}

// journalLoop writes what deliveries and timers append, and compacts the
// journal when it has grown.
func (s *Server) journalLoop() {
	j := s.jr
	defer close(j.done)
	for {
		select {
		case <-j.wake:
		case <-j.stop:
			s.journalSync()
			return
		}
		j.round.Lock()
		j.mu.Lock()
		compact := j.since > compactAfter && j.since > 4*j.live
		j.mu.Unlock()
		if compact {
			s.mu.Lock()
			snap := s.snapshotLocked()
			j.mu.Lock()
			// The snapshot covers every record appended so far.
			j.snapshot, j.since, j.live = snap, 0, bytes.Count(snap, []byte{'\n'})
			j.buf.Reset()
			j.mu.Unlock()
			s.mu.Unlock()
		}
		s.journalSync()
		j.round.Unlock()
	}
}

// closeJournal writes what is left and closes the file. Called at the end
// of Shutdown and Close, after the last delivery finished.
func (s *Server) closeJournal() {
	j := s.jr
	if j == nil {
		return
	}
	select {
	case <-j.stop:
	default:
		close(j.stop)
	}
	<-j.done
	j.ioMu.Lock()
	j.f.Close()
	j.ioMu.Unlock()
}

// syncWriter flushes the journal before the first byte of an API answer.
type syncWriter struct {
	http.ResponseWriter
	s      *Server
	synced bool
}

func (w *syncWriter) sync() {
	if !w.synced {
		w.synced = true
		w.s.journalSync()
	}
}

func (w *syncWriter) WriteHeader(code int) { w.sync(); w.ResponseWriter.WriteHeader(code) }
func (w *syncWriter) Write(b []byte) (int, error) {
	w.sync()
	return w.ResponseWriter.Write(b)
}
func (w *syncWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// The record builders. Each is called with s.mu held at the change it
// records.

func (s *Server) jMessage(m *message) {
	if s.jr != nil {
		s.journalAppend(record{Op: "msg", Msg: msgRecordOf(m)})
	}
}

func (s *Server) jAttempt(m *message) {
	if s.jr != nil {
		s.journalAppend(record{Op: "att", ID: m.id, Att: &attemptRecord{Attempts: m.attempts, NextAt: m.nextAt}})
	}
}

func (s *Server) jDone(m *message) {
	if s.jr != nil {
		s.journalAppend(record{Op: "done", ID: m.id})
	}
}

func (s *Server) jDLQ(e *dlqEntry) {
	if s.jr != nil {
		s.journalAppend(record{Op: "dlq", DLQ: dlqRecordOf(e)})
	}
}

func (s *Server) jDLQRemoved(id string) {
	if s.jr != nil {
		s.journalAppend(record{Op: "dlqdel", ID: id})
	}
}

func (s *Server) jSchedule(sch *schedule) {
	if s.jr != nil {
		s.journalAppend(record{Op: "sch", Sch: &schRecord{ID: sch.id, Cron: sch.cron, Destination: sch.destination,
			Queue: sch.queueName, Header: sch.header, Body: sch.body, CallerIP: sch.callerIP, CreatedAt: sch.createdAt, Paused: sch.paused}})
	}
}

func (s *Server) jScheduleDeleted(id string) {
	if s.jr != nil {
		s.journalAppend(record{Op: "schdel", ID: id})
	}
}

func (s *Server) jQueue(q *queue) {
	if s.jr != nil {
		s.journalAppend(record{Op: "queue", Queue: &queueRecord{Name: q.name, Parallelism: q.parallelism, Paused: q.paused, CreatedAt: q.createdAt}})
	}
}

func (s *Server) jQueueDeleted(name string) {
	if s.jr != nil {
		s.journalAppend(record{Op: "queuedel", ID: name})
	}
}

// jTopic records the group's state, or its deletion when it is gone.
func (s *Server) jTopic(name string) {
	if s.jr == nil {
		return
	}
	t := s.topics[name]
	if t == nil {
		s.journalAppend(record{Op: "topicdel", ID: name})
		return
	}
	s.journalAppend(record{Op: "topic", Topic: &topicRecord{Name: t.name, CreatedAt: t.createdAt, Endpoints: t.endpoints, Headers: t.headers}})
}

func (s *Server) jRun(run *workflowRun) {
	if s.jr != nil {
		s.journalAppend(record{Op: "run", Run: &runRecord{ID: run.id, URL: run.url, CreatedAt: run.createdAt, Failure: run.failureHeader}})
	}
}

func (s *Server) jStep(run *workflowRun) {
	if s.jr != nil {
		s.journalAppend(record{Op: "step", ID: run.id, Step: &run.steps[len(run.steps)-1]})
	}
}

func (s *Server) jRunEnded(id string) {
	if s.jr != nil {
		s.journalAppend(record{Op: "runend", ID: id})
	}
}

func (s *Server) jKeys() {
	if s.jr != nil {
		s.journalAppend(record{Op: "keys", Keys: &[2]string{s.curKey, s.nextKey}})
	}
}

// jFlow records fk's pause and pins after the management API changed
// them.
func (s *Server) jFlow(fk *flowKey) {
	if s.jr != nil {
		s.journalAppend(record{Op: "flow", Flow: flowRecordOf(fk)})
	}
}

func msgRecordOf(m *message) *msgRecord {
	r := &msgRecord{ID: m.id, URL: m.url, Topic: m.topic, Endpoint: m.endpoint, Queue: m.queueName, Orig: m.origHeader,
		Body: m.body, ScheduleID: m.scheduleID, CallerIP: m.callerIP, CreatedAt: m.createdAt, NotBefore: m.notBefore,
		Attempts: m.attempts}
	if m.attempts > 0 {
		r.NextAt = m.nextAt
	}
	if m.origHeader == nil {
		r.Method, r.Header, r.Retries, r.Timeout = m.method, m.header, m.retries, int64(m.timeout)
		if m.retryDelay != nil {
			r.RetryDelay = m.retryDelay.src
		}
		if m.parent != nil {
			r.Parent = m.parent.id
		}
	}
	if m.run != nil {
		r.Run, r.Step = m.run.id, m.stepIndex
	}
	return r
}

func dlqRecordOf(e *dlqEntry) *dlqRecord {
	return &dlqRecord{ID: e.id, At: e.at, Msg: *msgRecordOf(e.msg), Status: e.status, Header: e.header, Body: e.body, Err: e.errTxt}
}

// snapshotLocked encodes the live state as journal records. The caller
// holds s.mu.
func (s *Server) snapshotLocked() []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	put := func(r record) {
		if err := enc.Encode(r); err != nil {
			s.log.Error("journal: encode snapshot", "op", r.Op, "err", err)
		}
	}
	put(record{Op: "keys", Keys: &[2]string{s.curKey, s.nextKey}})
	for _, q := range s.queues {
		put(record{Op: "queue", Queue: &queueRecord{Name: q.name, Parallelism: q.parallelism, Paused: q.paused, CreatedAt: q.createdAt}})
	}
	for _, fk := range s.flows {
		if fk.managed() {
			put(record{Op: "flow", Flow: flowRecordOf(fk)})
		}
	}
	for _, t := range s.topics {
		put(record{Op: "topic", Topic: &topicRecord{Name: t.name, CreatedAt: t.createdAt, Endpoints: t.endpoints, Headers: t.headers}})
	}
	for _, id := range s.runOrder {
		if run := s.runs[id]; run != nil && !run.ended {
			put(record{Op: "run", Run: &runRecord{ID: run.id, URL: run.url, CreatedAt: run.createdAt, Steps: run.steps, Failure: run.failureHeader}})
		}
	}
	for _, sch := range s.schedules {
		put(record{Op: "sch", Sch: &schRecord{ID: sch.id, Cron: sch.cron, Destination: sch.destination,
			Queue: sch.queueName, Header: sch.header, Body: sch.body, CallerIP: sch.callerIP, CreatedAt: sch.createdAt, Paused: sch.paused}})
	}
	for _, e := range s.dlq.list() {
		put(record{Op: "dlq", DLQ: dlqRecordOf(e)})
	}
	// Parents before their callback messages, so restore can link them.
	for _, m := range s.messages {
		if !m.isCallback {
			put(record{Op: "msg", Msg: msgRecordOf(m)})
		}
	}
	for _, m := range s.messages {
		if m.isCallback {
			put(record{Op: "msg", Msg: msgRecordOf(m)})
		}
	}
	return buf.Bytes()
}

// restore rebuilds the state recs describe. Messages whose recorded
// settings no longer parse (a lower MaxRetries, say) are dropped with a
// warning. The caller holds s.mu, before the scheduler runs.
func (s *Server) restore(recs []record) {
	msgs := map[string]*msgRecord{}
	var msgOrder []string
	dlqs := map[string]*dlqRecord{}
	var dlqOrder []string
	schs := map[string]*schRecord{}
	runs := map[string]*runRecord{}
	var runOrder []string
	for _, r := range recs {
		if !r.complete() {
			s.log.Warn("journal: incomplete record skipped", "op", r.Op)
			continue
		}
		switch r.Op {
		case "keys":
			if r.Keys != nil {
				s.curKey, s.nextKey = r.Keys[0], r.Keys[1]
			}
		case "msg":
			if _, seen := msgs[r.Msg.ID]; !seen {
				msgOrder = append(msgOrder, r.Msg.ID)
			}
			msgs[r.Msg.ID] = r.Msg
		case "att":
			if m := msgs[r.ID]; m != nil && r.Att != nil {
				m.Attempts, m.NextAt = r.Att.Attempts, r.Att.NextAt
			}
		case "done":
			delete(msgs, r.ID)
		case "dlq":
			if _, seen := dlqs[r.DLQ.ID]; !seen {
				dlqOrder = append(dlqOrder, r.DLQ.ID)
			}
			dlqs[r.DLQ.ID] = r.DLQ
		case "dlqdel":
			delete(dlqs, r.ID)
		case "sch":
			schs[r.Sch.ID] = r.Sch
		case "schdel":
			delete(schs, r.ID)
		case "queue":
			q := s.getQueue(r.Queue.Name)
			q.parallelism, q.paused, q.createdAt = max(r.Queue.Parallelism, 1), r.Queue.Paused, r.Queue.CreatedAt
		case "queuedel":
			delete(s.queues, r.ID)
		case "flow":
			// Before any message is readmitted: getFlowKey then keeps
			// the pins, and a paused key starts nothing.
			f := r.Flow
			fk := &flowKey{key: f.Key, period: time.Second, paused: f.Paused}
			if f.PinnedParallelism > 0 {
				fk.parallelism, fk.pinnedParallelism = f.PinnedParallelism, true
			}
			if f.PinnedRate > 0 {
				fk.rate, fk.pinnedRate = f.PinnedRate, true
				if f.Period > 0 {
					fk.period = time.Duration(f.Period)
				}
			}
			if fk.managed() {
				s.flows[f.Key] = fk
			} else {
				delete(s.flows, f.Key)
			}
		case "topic":
			t := r.Topic
			s.topics[t.Name] = &topic{name: t.Name, createdAt: t.CreatedAt, updatedAt: t.CreatedAt, endpoints: t.Endpoints, headers: t.Headers}
		case "topicdel":
			delete(s.topics, r.ID)
		case "run":
			if _, seen := runs[r.Run.ID]; !seen {
				runOrder = append(runOrder, r.Run.ID)
			}
			runs[r.Run.ID] = r.Run
		case "step":
			if run := runs[r.ID]; run != nil && r.Step != nil {
				run.Steps = append(run.Steps, *r.Step)
			}
		case "runend":
			delete(runs, r.ID)
		}
	}
	for _, id := range runOrder {
		if r := runs[id]; r != nil {
			run := &workflowRun{id: r.ID, url: r.URL, createdAt: r.CreatedAt, steps: r.Steps}
			if len(r.Failure) > 0 {
				if fc, err := parseCallback(r.Failure, "Upstash-Failure-Callback", s.limits()); err == nil {
					run.failure, run.failureHeader = fc, r.Failure
				}
			}
			s.runs[id] = run
			s.runOrder = append(s.runOrder, id)
		}
	}
	for _, r := range schs {
		s.restoreSchedule(r)
	}
	var dlqSeq uint64
	for _, id := range dlqOrder {
		r := dlqs[id]
		if r == nil {
			continue
		}
		m, err := s.messageOf(&r.Msg, nil)
		if err != nil {
			s.log.Warn("journal: dead letter dropped", "dlqId", r.ID, "err", err)
			continue
		}
		m.done = true
		e := &dlqEntry{id: r.ID, at: r.At, msg: m, status: r.Status, header: r.Header, body: r.Body, errTxt: r.Err}
		s.dlq.byID[e.id] = e
		s.dlq.order = append(s.dlq.order, e)
		var ms int64
		var seq uint64
		if _, err := fmt.Sscanf(e.id, "%d-%d", &ms, &seq); err == nil {
			dlqSeq = max(dlqSeq, seq)
		}
	}
	s.dlq.seq = dlqSeq
	for len(s.dlq.byID) > s.dlq.max {
		delete(s.dlq.byID, s.dlq.order[0].id)
		s.dlq.order = s.dlq.order[1:]
	}
	restored := map[string]*message{}
	for _, id := range msgOrder {
		r := msgs[id]
		if r == nil {
			continue
		}
		m, err := s.messageOf(r, restored)
		if err != nil {
			s.log.Warn("journal: message dropped", "messageId", r.ID, "err", err)
			continue
		}
		restored[m.id] = m
		s.readmit(m, r)
	}
}

// messageOf rebuilds a message from its record. parents holds the
// messages restored so far, for callback messages to find theirs.
func (s *Server) messageOf(r *msgRecord, parents map[string]*message) (*message, error) {
	m := &message{id: r.ID, url: r.URL, topic: r.Topic, endpoint: r.Endpoint, queueName: r.Queue, body: r.Body,
		scheduleID: r.ScheduleID, callerIP: r.CallerIP, createdAt: r.CreatedAt, notBefore: r.NotBefore, origHeader: r.Orig}
	if r.Orig != nil {
		o, err := parsePublishHeaders(r.Orig, s.limits(), r.CreatedAt)
		if err != nil {
			return nil, err
		}
		m.method, m.header, m.retries, m.retryDelay, m.timeout = o.method, o.header, o.retries, o.retryDelay, o.timeout
		m.callback, m.failure, m.flow, m.labels, m.redact = o.callback, o.failure, o.flow, o.labels, o.redact
	} else {
		m.isCallback = true
		m.method, m.header, m.retries, m.timeout = r.Method, r.Header, r.Retries, time.Duration(r.Timeout)
		if r.RetryDelay != "" {
			e, err := parseRetryExpr(r.RetryDelay)
			if err != nil {
				return nil, err
			}
			m.retryDelay = e
		}
		if p := parents[r.Parent]; p != nil {
			m.parent = p
			p.children++
		}
	}
	if r.Run != "" {
		if run := s.runs[r.Run]; run != nil && r.Step < len(run.steps) {
			m.run, m.stepIndex = run, r.Step
		}
	}
	return m, nil
}

// readmit puts a restored message back on its way: its queue, flow key and
// next attempt as recorded. The caller holds s.mu.
func (s *Server) readmit(m *message, r *msgRecord) {
	if m.queueName != "" {
		m.queue = s.getQueue(m.queueName)
		m.queue.lag++
	}
	if m.flow != nil {
		m.flowKey = s.getFlowKey(m.flow)
	}
	m.attempts = r.Attempts
	m.state = stateCreated
	if m.attempts > 0 {
		m.state = stateRetry
	}
	s.messages[m.id] = m
	s.pending++
	at := m.notBefore
	if m.attempts > 0 {
		at = r.NextAt
	}
	m.nextAt = at
	// Always through the timer heap, due now at the earliest: nothing
	// starts before the scheduler runs.
	d := max(at.Sub(s.cfg.Now()), 0)
	if m.attempts == 0 {
		d = time.Duration(float64(d) * s.cfg.DelayScale)
	}
	m.timer = &timerItem{at: time.Now().Add(d), kind: timerMessage, msg: m}
	s.addTimer(m.timer)
}

// restoreSchedule re-creates a schedule from its record. The caller holds
// s.mu.
func (s *Server) restoreSchedule(r *schRecord) {
	spec, err := cronParser.Parse(r.Cron)
	if err != nil {
		s.log.Warn("journal: schedule dropped", "scheduleId", r.ID, "err", err)
		return
	}
	opts, err := parsePublishHeaders(r.Header, s.limits(), s.cfg.Now())
	if err != nil {
		s.log.Warn("journal: schedule dropped", "scheduleId", r.ID, "err", err)
		return
	}
	opts.cron, opts.scheduleID, opts.queueName = r.Cron, r.ID, r.Queue
	sch := &schedule{id: r.ID, cron: r.Cron, spec: spec, destination: r.Destination, queueName: r.Queue, header: r.Header,
		body: r.Body, opts: opts, callerIP: r.CallerIP, createdAt: r.CreatedAt, paused: r.Paused, lastStates: map[string]string{}}
	s.schedules[sch.id] = sch
	if !sch.paused {
		s.armSchedule(sch)
	}
}
