package jobs

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// callTransport wraps the configured RoundTripper for one qstash-go call.
// qstash-go v1.0.0 builds its requests without a context and cannot express
// every publish header, so this is where we
//   - attach the caller's context (cancellation and deadline reach the
//     socket; nothing is left running after Enqueue returns);
//   - pin the configured QStash URL (qstash-go lets the QSTASH_URL variable
//     override its Url option; explicit configuration should win);
//   - add the headers qstash-go has no field for (flow control, retry
//     delay), on the request or on each item of a batch body;
//   - record the status code, which qstash-go drops from its errors.
//
// A callTransport serves one call on one goroutine, so it needs no locking.
type callTransport struct {
	base   http.RoundTripper
	ctx    context.Context
	target *url.URL            // configured QStash base URL
	header http.Header         // extra headers for a single publish
	batch  []map[string]string // extra headers per batch item, or nil

	status     int
	retryAfter string
}

func (t *callTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	r := req.Clone(t.ctx)
	t.pin(r.URL)
	r.Host = ""
	for k, v := range t.header {
		r.Header[k] = v
	}
	if t.batch != nil && strings.HasSuffix(r.URL.Path, "/v2/batch") && r.Body != nil {
		if err := t.rewriteBatch(r); err != nil {
			return nil, err
		}
	}
	resp, err := t.base.RoundTrip(r)
	if err == nil {
		t.status = resp.StatusCode
		t.retryAfter = resp.Header.Get("Retry-After")
	}
	return resp, err
}

// pin points u at the configured QStash base, keeping the API path
// ("/v2/...") qstash-go appended to whatever base it chose.
func (t *callTransport) pin(u *url.URL) {
	base := strings.TrimSuffix(t.target.Path, "/")
	if u.Scheme == t.target.Scheme && u.Host == t.target.Host && strings.HasPrefix(u.Path, base+"/v2/") {
		return // the usual case: qstash-go used our URL
	}
	u.Scheme, u.Host = t.target.Scheme, t.target.Host
	if i := strings.Index(u.Path, "/v2/"); i >= 0 {
		u.Path, u.RawPath = base+u.Path[i:], ""
	}
}

// rewriteBatch adds each item's extra headers to the JSON body qstash-go
// built: [{"destination":..., "headers":{...}, "body":..., "queue":...}, ...].
func (t *callTransport) rewriteBatch(r *http.Request) error {
	raw, err := io.ReadAll(r.Body)
	_ = r.Body.Close()
	if err != nil {
		return err
	}
	var items []map[string]json.RawMessage
	if err := json.Unmarshal(raw, &items); err != nil || len(items) != len(t.batch) {
		return fmt.Errorf("jobs: unexpected batch body from qstash-go (%d items, want %d): %v", len(items), len(t.batch), err)
	}
	for i, extra := range t.batch {
		if len(extra) == 0 {
			continue
		}
		headers := map[string]string{}
		if h := items[i]["headers"]; len(h) > 0 && string(h) != "null" {
			if err := json.Unmarshal(h, &headers); err != nil {
				return fmt.Errorf("jobs: unexpected batch item headers from qstash-go: %w", err)
			}
		}
		for k, v := range extra {
			headers[k] = v
		}
		if items[i]["headers"], err = json.Marshal(headers); err != nil {
			return err
		}
	}
	body, err := json.Marshal(items)
	if err != nil {
		return err
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	r.ContentLength = int64(len(body))
	return nil
}
