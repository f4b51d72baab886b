package idempotency

import (
	"bufio"
	"encoding/json"
	"errors"
	"net"
	"net/http"
)

// recorder holds the handler's response in memory until the outcome is
// recorded, then writes it to the client. Buffering gives read-your-writes:
// once a client has seen the response, a retry finds the stored record
// instead of a 409. A response over the cap, or one the handler flushes
// (streaming), is passed through as it is written and is not replayable.
type recorder struct {
	w      http.ResponseWriter
	header http.Header
	status int
	buf    []byte
	max    int
	// passthrough is set once the response went to w directly.
	passthrough bool
	tooLarge    bool
	streamed    bool
}

func newRecorder(w http.ResponseWriter, max int) *recorder {
	return &recorder{w: w, header: w.Header().Clone(), max: max}
}

func (r *recorder) Header() http.Header { return r.header }

func (r *recorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
}

func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	if r.passthrough {
		return r.w.Write(b)
	}
	if len(r.buf)+len(b) > r.max {
		r.tooLarge = true
		if err := r.startPassthrough(); err != nil {
			return 0, err
		}
		return r.w.Write(b)
	}
	r.buf = append(r.buf, b...)
	return len(b), nil
}

// Flush (http.Flusher) means the handler streams: send what we have.
func (r *recorder) Flush() {
	r.streamed = true
	if r.status == 0 {
		r.status = http.StatusOK
	}
	if r.passthrough || r.startPassthrough() == nil {
		_ = http.NewResponseController(r.w).Flush()
	}
}

// Hijack is refused: a hijacked connection cannot be recorded or replayed.
func (r *recorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return nil, nil, errors.New("idempotency: hijacking is not supported on idempotent routes")
}

func (r *recorder) startPassthrough() error {
	r.passthrough = true
	copyHeader(r.w.Header(), r.header)
	r.w.WriteHeader(r.status)
	_, err := r.w.Write(r.buf)
	r.buf = nil
	return err
}

// reset drops what the handler wrote (after a panic), keeping the headers
// outer middleware had set before the handler ran.
func (r *recorder) reset(h http.Header) {
	r.header, r.status, r.buf = h, 0, nil
}

// finish writes the buffered response to the client.
func (r *recorder) finish() {
	if r.passthrough {
		return
	}
	if r.status == 0 {
		r.status = http.StatusOK
	}
	copyHeader(r.w.Header(), r.header)
	r.w.WriteHeader(r.status)
	_, _ = r.w.Write(r.buf)
}

func copyHeader(dst, src http.Header) {
	for k := range dst {
		if _, ok := src[k]; !ok {
			delete(dst, k)
		}
	}
	for k, v := range src {
		dst[k] = v
	}
}

// storedResponse is what the middleware keeps per key. V versions the
// format so a later change can still read old records.
type storedResponse struct {
	V      int                 `json:"v"`
	Status int                 `json:"s"`
	Header map[string][]string `json:"h,omitempty"`
	Body   []byte              `json:"b,omitempty"`
}

func (s storedResponse) encode() []byte {
	b, _ := json.Marshal(s) // cannot fail: plain types only
	return b
}

func decodeStored(b []byte) (storedResponse, error) {
	var s storedResponse
	if err := json.Unmarshal(b, &s); err != nil {
		return s, err
	}
	if s.V != 1 || s.Status < 100 || s.Status > 999 {
		return s, errors.New("idempotency: unknown stored response format")
	}
	return s, nil
}
