package qstashdev

import (
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// Request parsing shared by the resources: bodies, list parameters, bulk
// id lists and paging. None of it touches Server state.

// readBody reads a request body of at most limit bytes.
func readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return nil, errTooLarge(limit)
	}
	if err != nil {
		return nil, errorf(http.StatusBadRequest, "cannot read body: %v", err)
	}
	return b, nil
}

// callerIP is the publisher's address, sent on as Upstash-Caller-Ip.
func callerIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// multiValues reads a list parameter given repeated or comma-joined.
func multiValues(q url.Values, name string) []string {
	var out []string
	for _, v := range q[name] {
		for p := range strings.SplitSeq(v, ",") {
			if p = strings.TrimSpace(p); p != "" {
				out = append(out, p)
			}
		}
	}
	return out
}

// idsFromRequest reads ids from the query (JS, OAS) or a JSON body (Go,
// Python) of a bulk DELETE (docs/qstash-protocol.md §2.4).
func idsFromRequest(w http.ResponseWriter, r *http.Request, field string) ([]string, error) {
	ids := multiValues(r.URL.Query(), field)
	body, err := readBody(w, r, 1<<20)
	if err != nil {
		return nil, err
	}
	if len(strings.TrimSpace(string(body))) > 0 {
		var req map[string]json.RawMessage
		if err := json.Unmarshal(body, &req); err != nil {
			return nil, errorf(http.StatusBadRequest, "invalid JSON body: %v", err)
		}
		if raw, ok := req[field]; ok {
			var fromBody []string
			if err := json.Unmarshal(raw, &fromBody); err != nil {
				return nil, errorf(http.StatusBadRequest, "%s must be an array of strings", field)
			}
			ids = append(ids, fromBody...)
		}
	}
	return ids, nil
}

// countParam reads ?count=, def when absent, 400 outside 1..max.
func countParam(q url.Values, def, max int) (int, error) {
	v := q.Get("count")
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > max {
		return 0, errorf(http.StatusBadRequest, "invalid count %q: want 1..%d", v, max)
	}
	return n, nil
}

// page cuts a listing at an offset cursor; the cursor is empty at the end.
func page[T any](all []T, q url.Values, def, max int) ([]T, string, error) {
	count, err := countParam(q, def, max)
	if err != nil {
		return nil, "", err
	}
	off := 0
	if c := q.Get("cursor"); c != "" {
		if off, err = strconv.Atoi(c); err != nil || off < 0 {
			return nil, "", errorf(http.StatusBadRequest, "invalid cursor %q", c)
		}
	}
	if off > len(all) {
		off = len(all)
	}
	end := min(off+count, len(all))
	cursor := ""
	if end < len(all) {
		cursor = strconv.Itoa(end)
	}
	return all[off:end], cursor, nil
}
