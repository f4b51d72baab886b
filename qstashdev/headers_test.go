package qstashdev

import (
	"net/http"
	"testing"
	"time"
)

func TestParseDuration(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      string
		want    time.Duration
		wantErr bool
	}{
		{in: "50s", want: 50 * time.Second},
		{in: "1d10h30m", want: 34*time.Hour + 30*time.Minute},
		{in: "10", want: 10 * time.Second},
		{in: "250ms", want: 250 * time.Millisecond},
		{in: "1H", want: time.Hour},
		{in: "", wantErr: true},
		{in: "abc", wantErr: true},
		{in: "5x", wantErr: true},
		{in: "-5s", wantErr: true},
		{in: "1.5s", wantErr: true},
		{in: "s", wantErr: true},
		{in: "99999999999999999999d", wantErr: true},
		{in: "106752d", wantErr: true},
	}
	for _, tt := range tests {
		got, err := parseDuration(tt.in)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("parseDuration(%q) = %v, %v; want %v, err=%v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestParseRetryAfter(t *testing.T) {
	t.Parallel()
	now := time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		in     string
		want   time.Duration
		wantOK bool
	}{
		{in: "0", want: 0, wantOK: true},
		{in: "120", want: 2 * time.Minute, wantOK: true},
		{in: "6m5s", want: 6*time.Minute + 5*time.Second, wantOK: true},
		{in: "1500ms", want: 1500 * time.Millisecond, wantOK: true},
		{in: "Wed, 01 Jan 2025 12:00:30 GMT", want: 30 * time.Second, wantOK: true},
		{in: "Wed, 01 Jan 2025 11:00:00 GMT", want: 0, wantOK: true},
		{in: "86401"},
		{in: "25h"},
		{in: "-1"},
		{in: "soon"},
		{in: ""},
	}
	for _, tt := range tests {
		got, ok := parseRetryAfter(tt.in, now)
		if ok != tt.wantOK || got != tt.want {
			t.Errorf("parseRetryAfter(%q) = %v, %v; want %v, %v", tt.in, got, ok, tt.want, tt.wantOK)
		}
	}
}

func TestParseFlowControlValue(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in        string
		par, rate int
		period    time.Duration
		wantErr   bool
	}{
		{in: "parallelism=5,rate=10,period=1m", par: 5, rate: 10, period: time.Minute},
		{in: "parallelism=2", par: 2, period: time.Second},
		{in: "rate=3, period=1d", rate: 3, period: 24 * time.Hour},
		{in: " rate = 7 ", rate: 7, period: time.Second},
		{in: "", wantErr: true},
		{in: "period=1s", wantErr: true},
		{in: "parallelism=0", wantErr: true},
		{in: "parallelism=x", wantErr: true},
		{in: "rate=1,period=8d", wantErr: true},
		{in: "speed=3", wantErr: true},
		{in: "parallelism", wantErr: true},
	}
	for _, tt := range tests {
		p, r, per, err := parseFlowControlValue(tt.in)
		if (err != nil) != tt.wantErr || p != tt.par || r != tt.rate || per != tt.period {
			t.Errorf("parseFlowControlValue(%q) = %d %d %v %v", tt.in, p, r, per, err)
		}
	}
}

func TestRetryExpr(t *testing.T) {
	t.Parallel()
	tests := []struct {
		expr    string
		retried int
		want    float64
		wantErr bool
	}{
		{expr: "1000", want: 1000},
		{expr: "1000 * (1 + retried)", retried: 2, want: 3000},
		{expr: "pow(2, retried) * 1000", retried: 3, want: 8000},
		{expr: "max(1000, pow(2, retried) * 100)", retried: 1, want: 1000},
		{expr: "min(5, 3, 9)", want: 3},
		{expr: "sqrt(16) + abs(-2) + floor(1.7) + ceil(1.2) + round(2.5)", want: 4 + 2 + 1 + 2 + 3},
		{expr: "exp(0) * 10 % 4", want: 2},
		{expr: "-retried + 10 / 4", retried: 1, want: 1.5},
		{expr: "RETRIED * 2", retried: 4, want: 8},
		{expr: "", wantErr: true},
		{expr: "pow(2", wantErr: true},
		{expr: "pow(2)", wantErr: true},
		{expr: "foo(1)", wantErr: true},
		{expr: "x", wantErr: true},
		{expr: "1 +", wantErr: true},
		{expr: "1 2", wantErr: true},
		{expr: "1..2", wantErr: true},
		{expr: "sqrt", wantErr: true},
	}
	for _, tt := range tests {
		e, err := parseRetryExpr(tt.expr)
		if (err != nil) != tt.wantErr {
			t.Errorf("parseRetryExpr(%q) err = %v, wantErr %v", tt.expr, err, tt.wantErr)
			continue
		}
		if err != nil {
			continue
		}
		if got := e.eval(float64(tt.retried)); got != tt.want {
			t.Errorf("%q(retried=%d) = %v, want %v", tt.expr, tt.retried, got, tt.want)
		}
	}
	if e, _ := parseRetryExpr("0 - 5"); e != nil {
		if _, ok := e.delayMillis(0); ok {
			t.Error("negative delay accepted")
		}
	}
}

func TestDestinationFromPath(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, escaped, query string
		want                 string
		wantHeader           map[string]string
	}{
		{name: "raw url", escaped: "https://example.com/a", want: "https://example.com/a"},
		{name: "query restored verbatim", escaped: "https://example.com/a", query: "b=2&a=1&s=x%20y", want: "https://example.com/a?b=2&a=1&s=x%20y"},
		{name: "config params stripped", escaped: "http://h:1/x", query: "qstash_token=t&upstash-delay=5s&keep=1&Upstash-Retries=2",
			want: "http://h:1/x?keep=1", wantHeader: map[string]string{"Upstash-Delay": "5s", "Upstash-Retries": "2"}},
		{name: "collapsed slash", escaped: "https:/example.com/a", want: "https://example.com/a"},
		{name: "percent encoded", escaped: "https%3A%2F%2Fexample.com%2Fa%3Fq%3D1", query: "z=2", want: "https://example.com/a?q=1&z=2"},
		{name: "group name", escaped: "my-group", want: "my-group"},
	}
	for _, tt := range tests {
		h := http.Header{}
		got, err := destinationFromPath(tt.escaped, tt.query, h)
		if err != nil || got != tt.want {
			t.Errorf("%s: got %q, %v; want %q", tt.name, got, err, tt.want)
		}
		for k, v := range tt.wantHeader {
			if h.Get(k) != v {
				t.Errorf("%s: header %s = %q, want %q", tt.name, k, h.Get(k), v)
			}
		}
	}
}

func TestParsePublishHeaders(t *testing.T) {
	t.Parallel()
	now := time.Unix(1700000000, 0)
	lim := parseLimits{maxRetries: 20, maxTimeout: time.Hour}
	h := http.Header{}
	for k, v := range map[string]string{
		"upstash-method": "patch", "Upstash-Forward-X-Token": "abc", "Content-Type": "text/plain",
		"Upstash-Delay": "1m", "Upstash-Not-Before": "1700000100", "Upstash-Retries": "5",
		"Upstash-Timeout": "2h", "Upstash-Content-Based-Deduplication": "True", "Upstash-Label": "a, b,,",
		"Upstash-Flow-Control-Key": "k", "Upstash-Flow-Control-Value": "rate=2,period=1m",
		"Upstash-Callback": "https://cb.example/x", "Upstash-Callback-Retries": "1", "Upstash-Callback-Forward-Z": "z",
		"Upstash-Redact-Fields": "body,header[X-Token]", "X-Other": "not forwarded",
	} {
		h.Set(k, v)
	}
	o, err := parsePublishHeaders(h, lim, now)
	if err != nil {
		t.Fatal(err)
	}
	switch {
	case o.method != "PATCH", o.header.Get("X-Token") != "abc", o.header.Get("Content-Type") != "text/plain", o.header.Get("X-Other") != "":
		t.Errorf("method/header: %s %v", o.method, o.header)
	case o.delay != time.Minute || !o.hasNotBefore || o.notBefore.Unix() != 1700000100:
		t.Errorf("delay/notBefore: %v %v", o.delay, o.notBefore)
	case o.retries != 5 || o.timeout != time.Hour || !o.contentDedup:
		t.Errorf("retries/timeout/dedup: %d %v %v", o.retries, o.timeout, o.contentDedup)
	case len(o.labels) != 2 || o.flow == nil || o.flow.rate != 2 || o.flow.period != time.Minute:
		t.Errorf("labels/flow: %v %+v", o.labels, o.flow)
	case o.callback == nil || !o.callback.hasRetries || o.callback.retries != 1 || o.callback.header.Get("Z") != "z":
		t.Errorf("callback: %+v", o.callback)
	case !o.redact.body || len(o.redact.headers) != 1:
		t.Errorf("redact: %+v", o.redact)
	}
	h = http.Header{"Upstash-Header-Forward": {"true"}, "X-Webhook": {"1"}, "Authorization": {"Bearer secret"}}
	o, err = parsePublishHeaders(h, lim, now)
	if err != nil || o.header.Get("X-Webhook") != "1" || o.header.Get("Authorization") != "" {
		t.Errorf("header forward: %v %v", o.header, err)
	}
}

// FuzzParsePublishHeaders feeds arbitrary values to every header parser; it
// must never panic.
func FuzzParsePublishHeaders(f *testing.F) {
	for _, s := range []string{"1d10h30m", "pow(2, retried) * 1000", "parallelism=5,rate=10,period=1m", "true", "https://x.y/z", "header[A]", "-1", ""} {
		f.Add(s)
	}
	names := []string{"Upstash-Delay", "Upstash-Not-Before", "Upstash-Retries", "Upstash-Retry-Delay", "Upstash-Timeout",
		"Upstash-Method", "Upstash-Content-Based-Deduplication", "Upstash-Callback", "Upstash-Failure-Callback-Retries",
		"Upstash-Flow-Control-Value", "Upstash-Redact-Fields", "Upstash-Label", "Upstash-Forward-" + "X"}
	lim := parseLimits{maxRetries: 20, maxTimeout: time.Hour}
	f.Fuzz(func(t *testing.T, v string) {
		for _, n := range names {
			h := http.Header{n: {v}, "Upstash-Flow-Control-Key": {"k"}, "Upstash-Callback": {"https://cb.example"}}
			o, err := parsePublishHeaders(h, lim, time.Now())
			if err == nil && o.retryDelay != nil {
				o.retryDelay.delayMillis(3)
			}
		}
		parseRetryAfter(v, time.Now())
		destinationFromPath(v, v, http.Header{})
	})
}

func FuzzRetryExpr(f *testing.F) {
	for _, s := range []string{"1000 * (1 + retried)", "max(1000, pow(2, retried) * 100)", "((((1))))", "-(-(-1))"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if e, err := parseRetryExpr(s); err == nil {
			e.delayMillis(5)
		}
	})
}
