package qstashdev

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"
)

// Deduplication (docs/qstash-protocol.md §9): a publish whose
// Upstash-Deduplication-Id (or content hash) was seen within the window is
// answered 202 with the first publish's response and creates nothing.

// dedupWindow is how long a deduplication id is remembered.
const dedupWindow = 10 * time.Minute

type dedupEntry struct {
	key     string
	expires time.Time // monotonic
	resp    any       // the publish response to replay
	gone    bool
}

// rememberDedup stores a publish response under key for the window,
// evicting expired keys first (they expire in insertion order). The caller
// holds s.mu.
func (s *Server) rememberDedup(key string, resp any) {
	now := time.Now()
	for len(s.dedupOrder) > 0 && (s.dedupOrder[0].gone || !now.Before(s.dedupOrder[0].expires)) {
		e := s.dedupOrder[0]
		if s.dedup[e.key] == e {
			delete(s.dedup, e.key)
		}
		s.dedupOrder[0] = nil
		s.dedupOrder = s.dedupOrder[1:]
	}
	e := &dedupEntry{key: key, expires: now.Add(dedupWindow), resp: resp}
	s.dedup[key] = e
	s.dedupOrder = append(s.dedupOrder, e)
}

// lookupDedup returns the response remembered under key, if still in the
// window. The caller holds s.mu.
func (s *Server) lookupDedup(key string) (any, bool) {
	e := s.dedup[key]
	if e == nil {
		return nil, false
	}
	if !time.Now().Before(e.expires) {
		delete(s.dedup, key)
		e.gone = true
		return nil, false
	}
	return e.resp, true
}

// markDeduplicated turns a remembered response into the duplicate's answer.
func markDeduplicated(prev any) any {
	switch v := prev.(type) {
	case pubResp:
		v.Deduplicated = true
		return v
	case []pubResp:
		out := slices.Clone(v)
		for i := range out {
			out[i].Deduplicated = true
		}
		return out
	}
	return prev
}

// contentHash is the content-based dedup id: destination, body, Content-Type
// and forwarded headers.
func contentHash(dest string, header http.Header, body []byte) string {
	h := sha256.New()
	io.WriteString(h, dest)
	h.Write([]byte{0})
	keys := make([]string, 0, len(header))
	for k := range header {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		io.WriteString(h, k+":"+strings.Join(header[k], ",")+"\x00")
	}
	h.Write(body)
	return hex.EncodeToString(h.Sum(nil))
}
