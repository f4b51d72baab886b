package qstashdev

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"net/http"
	"unicode/utf8"
)

// messageJSON is the Message object of §5.1. callerIP and callerIp are both
// emitted because the SDKs disagree on the spelling.
type messageJSON struct {
	MessageID             string      `json:"messageId"`
	URL                   string      `json:"url"`
	TopicName             string      `json:"topicName,omitempty"`
	EndpointName          string      `json:"endpointName,omitempty"`
	Method                string      `json:"method"`
	Header                http.Header `json:"header,omitempty"`
	Body                  string      `json:"body,omitempty"`
	BodyBase64            string      `json:"bodyBase64,omitempty"`
	MaxRetries            int         `json:"maxRetries"`
	NotBefore             int64       `json:"notBefore"`
	CreatedAt             int64       `json:"createdAt"`
	Callback              string      `json:"callback,omitempty"`
	FailureCallback       string      `json:"failureCallback,omitempty"`
	CallbackHeader        http.Header `json:"callbackHeader,omitempty"`
	FailureCallbackHeader http.Header `json:"failureCallbackHeader,omitempty"`
	QueueName             string      `json:"queueName,omitempty"`
	ScheduleID            string      `json:"scheduleId,omitempty"`
	CallerIP              string      `json:"callerIP,omitempty"`
	CallerIPAlt           string      `json:"callerIp,omitempty"`
	Label                 string      `json:"label,omitempty"`
	Labels                []string    `json:"labels,omitempty"`
	FlowControlKey        string      `json:"flowControlKey,omitempty"`
	Parallelism           int         `json:"parallelism,omitempty"`
	Rate                  int         `json:"rate,omitempty"`
	Period                int64       `json:"period,omitempty"`
	RetryDelayExpression  string      `json:"retryDelayExpression,omitempty"`
}

type dlqJSON struct {
	messageJSON
	DLQID              string      `json:"dlqId"`
	ResponseStatus     int         `json:"responseStatus"`
	ResponseHeader     http.Header `json:"responseHeader,omitempty"`
	ResponseBody       string      `json:"responseBody,omitempty"`
	ResponseBodyBase64 string      `json:"responseBodyBase64,omitempty"`
	Error              string      `json:"error,omitempty"`
}

// textOrBase64 puts valid UTF-8 in the first result, anything else base64
// encoded in the second, as the API does for bodies.
func textOrBase64(b []byte) (string, string) {
	if utf8.Valid(b) {
		return string(b), ""
	}
	return "", base64.StdEncoding.EncodeToString(b)
}

func redacted(v []byte) string {
	sum := sha256.Sum256(v)
	return "REDACTED:" + hex.EncodeToString(sum[:])
}

// redactHeader applies Upstash-Redact-Fields to a header for display; the
// destination still gets the original values.
func redactHeader(h http.Header, r redaction) http.Header {
	if !r.allHeaders && len(r.headers) == 0 {
		return h
	}
	out := h.Clone()
	for k, vs := range out {
		hide := r.allHeaders
		for _, name := range r.headers {
			hide = hide || name == k
		}
		if hide {
			for i, v := range vs {
				vs[i] = redacted([]byte(v))
			}
		}
	}
	return out
}

func (m *message) view() messageJSON {
	v := messageJSON{
		MessageID: m.id, URL: m.url, TopicName: m.topic, EndpointName: m.endpoint, Method: m.method,
		Header: redactHeader(m.header, m.redact), MaxRetries: m.retries,
		NotBefore: m.notBefore.UnixMilli(), CreatedAt: m.createdAt.UnixMilli(),
		QueueName: m.queueName, ScheduleID: m.scheduleID, CallerIP: m.callerIP, CallerIPAlt: m.callerIP,
		Labels: m.labels,
	}
	if m.redact.body {
		v.Body = redacted(m.body)
	} else {
		v.Body, v.BodyBase64 = textOrBase64(m.body)
	}
	if len(m.labels) > 0 {
		v.Label = m.labels[0]
	}
	if m.callback != nil {
		v.Callback, v.CallbackHeader = m.callback.url, nonEmpty(m.callback.header)
	}
	if m.failure != nil {
		v.FailureCallback, v.FailureCallbackHeader = m.failure.url, nonEmpty(m.failure.header)
	}
	if m.flow != nil {
		v.FlowControlKey, v.Parallelism, v.Rate = m.flow.key, m.flow.parallelism, m.flow.rate
		v.Period = int64(m.flow.period.Seconds())
	}
	if m.retryDelay != nil {
		v.RetryDelayExpression = m.retryDelay.src
	}
	return v
}

func nonEmpty(h http.Header) http.Header {
	if len(h) == 0 {
		return nil
	}
	return h
}

func (e *dlqEntry) view() dlqJSON {
	v := dlqJSON{messageJSON: e.msg.view(), DLQID: e.id, ResponseStatus: e.status, ResponseHeader: e.header, Error: e.errTxt}
	v.ResponseBody, v.ResponseBodyBase64 = textOrBase64(e.body)
	return v
}

type queueJSON struct {
	Name        string `json:"name"`
	CreatedAt   int64  `json:"createdAt"`
	UpdatedAt   int64  `json:"updatedAt"`
	Parallelism int    `json:"parallelism"`
	Paused      bool   `json:"paused"`
	Lag         int    `json:"lag"`
}

func (q *queue) view() queueJSON {
	return queueJSON{Name: q.name, CreatedAt: q.createdAt.UnixMilli(), UpdatedAt: q.updatedAt.UnixMilli(),
		Parallelism: q.parallelism, Paused: q.paused, Lag: q.lag}
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

type flowJSON struct {
	FlowControlKey      string `json:"flowControlKey"`
	WaitListSize        int    `json:"waitListSize"`
	ParallelismMax      int    `json:"parallelismMax"`
	ParallelismCount    int    `json:"parallelismCount"`
	RateMax             int    `json:"rateMax"`
	RateCount           int    `json:"rateCount"`
	RatePeriod          int64  `json:"ratePeriod"`
	RatePeriodStart     int64  `json:"ratePeriodStart"`
	IsPaused            bool   `json:"isPaused"`
	IsPinnedParallelism bool   `json:"isPinnedParallelism"`
	IsPinnedRate        bool   `json:"isPinnedRate"`
}

func (fk *flowKey) view() flowJSON {
	v := flowJSON{FlowControlKey: fk.key, WaitListSize: len(fk.waiting), ParallelismMax: fk.parallelism,
		ParallelismCount: fk.inflight, RateMax: fk.rate, RateCount: fk.count, RatePeriod: int64(fk.period.Seconds())}
	if !fk.windowStart.IsZero() {
		v.RatePeriodStart = fk.windowStart.Unix()
	}
	return v
}
