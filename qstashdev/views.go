package qstashdev

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"net/http"
	"unicode/utf8"
)

// Display helpers shared by the JSON views of messages, DLQ entries and
// schedules. Each resource's view type lives in the resource's file.

// textOrBase64 puts valid UTF-8 in the first result, anything else base64
// encoded in the second, as the API does for bodies.
func textOrBase64(b []byte) (string, string) {
	if utf8.Valid(b) {
		return string(b), ""
	}
	return "", base64.StdEncoding.EncodeToString(b)
}

// redacted is how Upstash-Redact-Fields shows a value
// (docs/qstash-protocol.md §3.3).
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

func nonEmpty(h http.Header) http.Header {
	if len(h) == 0 {
		return nil
	}
	return h
}
