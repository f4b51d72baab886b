package qstashdev

import (
	"net/url"
	"strconv"
)

// messageFilter holds the list filters of bulk cancel, the DLQ and the
// event log (docs/qstash-protocol.md §7, §13, §15): OR within one, AND
// across.
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

// match reports whether m passes every filter. It reads only fields fixed
// at creation.
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
