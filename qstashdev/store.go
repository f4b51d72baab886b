package qstashdev

import (
	"fmt"
	"net/http"
	"time"
)

// dlqEntry is a dead-lettered message with the last response it got (§2.3).
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
// is dropped when a new one would exceed it.
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

func (s *Server) deadLetter(m *message, res *attemptResult) string {
	e := &dlqEntry{at: s.cfg.Now(), msg: m, status: res.status, header: res.header, body: res.body}
	if res.err != nil {
		e.errTxt = res.errorText()
	}
	s.dlq.add(e)
	return e.id
}

// eventRecord is one entry of GET /v2/events (§5.6).
type eventRecord struct {
	Time             int64    `json:"time"`
	MessageID        string   `json:"messageId"`
	State            string   `json:"state"`
	Error            string   `json:"error,omitempty"`
	NextDeliveryTime int64    `json:"nextDeliveryTime,omitempty"`
	URL              string   `json:"url"`
	TopicName        string   `json:"topicName,omitempty"`
	EndpointName     string   `json:"endpointName,omitempty"`
	ScheduleID       string   `json:"scheduleId,omitempty"`
	QueueName        string   `json:"queueName,omitempty"`
	ResponseStatus   int      `json:"responseStatus,omitempty"`
	Method           string   `json:"method,omitempty"`
	MaxRetries       int      `json:"maxRetries"`
	Label            string   `json:"label,omitempty"`
	Labels           []string `json:"labels,omitempty"`
	seq              uint64
}

// eventLog is a ring buffer of the newest max events.
type eventLog struct {
	max  int
	buf  []eventRecord
	next int
	seq  uint64
}

func (l *eventLog) add(e eventRecord) {
	l.seq++
	e.seq = l.seq
	if len(l.buf) < l.max {
		l.buf = append(l.buf, e)
		return
	}
	l.buf[l.next] = e
	l.next = (l.next + 1) % l.max
}

// newestFirst calls fn for each event, newest first, until fn returns false.
func (l *eventLog) newestFirst(fn func(e *eventRecord) bool) {
	n := len(l.buf)
	for i := range n {
		idx := (l.next - 1 - i + 2*n) % n
		if len(l.buf) < l.max {
			idx = n - 1 - i
		}
		if !fn(&l.buf[idx]) {
			return
		}
	}
}
