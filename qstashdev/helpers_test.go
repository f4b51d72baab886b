package qstashdev_test

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/digis/jobworker/qstashdev"
	"github.com/digis/jobworker/qstashdev/qstashdevtest"
	qstash "github.com/upstash/qstash-go"
)

func TestMain(m *testing.M) {
	// qstash-go lets QSTASH_URL override Options.Url; tests must talk to
	// their own server.
	os.Unsetenv("QSTASH_URL")
	os.Exit(m.Run())
}

// delivery is one request a receiver got.
type delivery struct {
	at     time.Time
	method string
	url    string // exactly as called: what the token's sub must be
	path   string
	header http.Header
	body   []byte
	n      int // 1-based count of deliveries to this path
}

func (d delivery) retried() int {
	n, _ := strconv.Atoi(d.header.Get("Upstash-Retried"))
	return n
}

type reply struct {
	status int
	header map[string]string
	body   string
	block  bool // hold the request until the test ends or the request is cancelled
	// hold, when set, holds the request (after it is on rc.ch) until the
	// test sends a token on it, or the request is cancelled.
	hold chan struct{}
}

// receiver is a strict destination: every request must carry a valid
// Upstash-Signature for the exact URL and body (checked with qstash-go's own
// Receiver and with stricter claim checks), or the test fails.
type receiver struct {
	t        testing.TB
	srv      *httptest.Server
	keys     func() (string, string)
	ch       chan delivery
	done     chan struct{}
	mu       sync.Mutex
	counts   map[string]int
	respond  func(d delivery) reply
	inflight atomic.Int32
	maxIn    atomic.Int32
}

func newReceiver(t testing.TB, keys func() (string, string), respond func(d delivery) reply) *receiver {
	t.Helper()
	rc := &receiver{t: t, keys: keys, ch: make(chan delivery, 10000), done: make(chan struct{}),
		counts: map[string]int{}, respond: respond}
	rc.srv = httptest.NewServer(http.HandlerFunc(rc.serve))
	t.Cleanup(func() {
		close(rc.done)
		rc.srv.Close()
	})
	return rc
}

func (rc *receiver) URL(path string) string { return rc.srv.URL + path }

func (rc *receiver) serve(w http.ResponseWriter, r *http.Request) {
	cur := rc.inflight.Add(1)
	defer rc.inflight.Add(-1)
	for {
		m := rc.maxIn.Load()
		if cur <= m || rc.maxIn.CompareAndSwap(m, cur) {
			break
		}
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		rc.t.Errorf("receiver: read body: %v", err)
		return
	}
	full := "http://" + r.Host + r.URL.RequestURI()
	if err := rc.verify(r.Header, full, body); err != nil {
		rc.t.Errorf("receiver: %s %s: %v", r.Method, full, err)
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	rc.mu.Lock()
	rc.counts[r.URL.Path]++
	n := rc.counts[r.URL.Path]
	rc.mu.Unlock()
	d := delivery{at: time.Now(), method: r.Method, url: full, path: r.URL.Path, header: r.Header.Clone(), body: body, n: n}
	rep := reply{status: http.StatusOK}
	if rc.respond != nil {
		rep = rc.respond(d)
	}
	rc.ch <- d
	if rep.block {
		select {
		case <-r.Context().Done():
		case <-rc.done:
		}
		return
	}
	if rep.hold != nil {
		select {
		case <-rep.hold:
		case <-r.Context().Done():
			return
		case <-rc.done:
			return
		}
	}
	for k, v := range rep.header {
		w.Header().Set(k, v)
	}
	if rep.status == 0 {
		rep.status = http.StatusOK
	}
	w.WriteHeader(rep.status)
	io.WriteString(w, rep.body)
}

// verify checks the delivery the way a strict receiver should
// (docs/qstash-protocol.md §5.4), and
// also through qstash-go's Receiver, the SDK our users call.
func (rc *receiver) verify(h http.Header, url string, body []byte) error {
	sigs := h.Values("Upstash-Signature")
	if len(sigs) != 1 {
		return fmt.Errorf("want exactly one Upstash-Signature, got %d", len(sigs))
	}
	cur, next := rc.keys()
	if err := qstash.NewReceiver(cur, next).Verify(qstash.VerifyOptions{Signature: sigs[0], Url: url, Body: string(body)}); err != nil {
		return fmt.Errorf("qstash-go Receiver: %v", err)
	}
	parts := strings.Split(sigs[0], ".")
	if len(parts) != 3 {
		return fmt.Errorf("token has %d segments", len(parts))
	}
	var hdr struct{ Alg, Typ string }
	if err := decodeSegment(parts[0], &hdr); err != nil || hdr.Alg != "HS256" || hdr.Typ != "JWT" {
		return fmt.Errorf("bad JOSE header %+v (%v)", hdr, err)
	}
	var c struct {
		Iss, Sub, Jti, Body string
		Exp, Nbf, Iat       *int64
	}
	if err := decodeSegment(parts[1], &c); err != nil {
		return err
	}
	now := time.Now().Unix()
	switch {
	case c.Iss != "Upstash":
		return fmt.Errorf("iss %q", c.Iss)
	case c.Sub != url:
		return fmt.Errorf("sub %q, want %q", c.Sub, url)
	case c.Exp == nil || c.Nbf == nil || c.Iat == nil:
		return fmt.Errorf("exp/nbf/iat missing")
	case *c.Exp-*c.Iat != 300 || *c.Iat > now+1 || *c.Exp <= now:
		return fmt.Errorf("bad lifetime iat=%d exp=%d now=%d", *c.Iat, *c.Exp, now)
	case *c.Nbf != 0:
		return fmt.Errorf("nbf %d, want 0", *c.Nbf)
	case !strings.HasPrefix(c.Jti, "jwt_"):
		return fmt.Errorf("jti %q", c.Jti)
	}
	sum := sha256.Sum256(body)
	if want := base64.URLEncoding.EncodeToString(sum[:]); c.Body != want {
		return fmt.Errorf("body claim %q, want padded %q", c.Body, want)
	}
	if h.Get("User-Agent") != "Upstash-QStash" {
		return fmt.Errorf("User-Agent %q", h.Get("User-Agent"))
	}
	if !strings.HasPrefix(h.Get("Upstash-Message-Id"), "msg_") {
		return fmt.Errorf("Upstash-Message-Id %q", h.Get("Upstash-Message-Id"))
	}
	if _, err := strconv.Atoi(h.Get("Upstash-Retried")); err != nil {
		return fmt.Errorf("Upstash-Retried %q", h.Get("Upstash-Retried"))
	}
	if h.Get("Authorization") != "" && !strings.HasPrefix(h.Get("Authorization"), "Bearer fwd") {
		return fmt.Errorf("publish Authorization leaked to destination: %q", h.Get("Authorization"))
	}
	return nil
}

func decodeSegment(seg string, v any) error {
	b, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

// next waits for the next delivery.
func (rc *receiver) next(t testing.TB, timeout time.Duration) delivery {
	t.Helper()
	select {
	case d := <-rc.ch:
		return d
	case <-time.After(timeout):
		t.Fatalf("no delivery within %v", timeout)
		return delivery{}
	}
}

// take waits for n deliveries.
func (rc *receiver) take(t testing.TB, n int, timeout time.Duration) []delivery {
	t.Helper()
	deadline := time.After(timeout)
	out := make([]delivery, 0, n)
	for len(out) < n {
		select {
		case d := <-rc.ch:
			out = append(out, d)
		case <-deadline:
			t.Fatalf("got %d of %d deliveries within %v", len(out), n, timeout)
		}
	}
	return out
}

// env is one test's QStash server, qstash-go client and receiver.
type env struct {
	srv    *qstashdevtest.Server
	client *qstash.Client
	rcv    *receiver
	// changed gets a token whenever the server records an event (any
	// message state change); waitFor re-checks its condition on each.
	changed chan struct{}
}

func setup(t testing.TB, cfg qstashdev.Config, respond func(d delivery) reply) *env {
	t.Helper()
	if cfg.TimeScale == 0 {
		cfg.TimeScale = 0.001
	}
	srv := qstashdevtest.Start(t, cfg)
	rcv := newReceiver(t, srv.SigningKeys, respond)
	client := qstash.NewClientWith(qstash.Options{Url: srv.URL, Token: qstashdev.DevToken})
	e := &env{srv: srv, client: client, rcv: rcv, changed: make(chan struct{}, 1)}
	qstashdev.OnEvent(srv.Server, func(string, string) {
		select {
		case e.changed <- struct{}{}:
		default: // a token is already waiting: the condition will be re-checked
		}
	})
	return e
}

// waitFor returns once cond holds. It checks cond now and after every
// state change the server records, so it waits on the server, never on a
// timer; the deadline only bounds a failing test.
func (e *env) waitFor(t testing.TB, cond func() bool) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for !cond() {
		select {
		case <-e.changed:
		case <-deadline:
			t.Fatal("condition not met within 10s")
		}
	}
}

// countEvents returns how many event-log entries match query (e.g.
// "state=ACTIVE&queueName=q"). State changes are recorded synchronously
// with the decision that makes them, so the count is exact at the moment
// of the call.
func (e *env) countEvents(t testing.TB, query string) int {
	t.Helper()
	status, body := e.api(t, "GET", "/v2/events?count=1000&"+query, nil, nil)
	var ev struct{ Events []json.RawMessage }
	if err := json.Unmarshal(body, &ev); err != nil || status != http.StatusOK {
		t.Fatalf("events %s: %d %s", query, status, body)
	}
	return len(ev.Events)
}

// api calls the server's REST API directly.
func (e *env) api(t testing.TB, method, path string, body io.Reader, header map[string]string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, e.srv.URL+path, body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+qstashdev.DevToken)
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}
