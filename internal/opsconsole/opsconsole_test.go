package opsconsole_test

import (
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/digis/jobworker/internal/logtest"
	"github.com/digis/jobworker/internal/opsadapter"
	"github.com/digis/jobworker/internal/opsconsole"
	"github.com/digis/jobworker/internal/opsstats"
	"github.com/digis/jobworker/internal/redistest"
	"github.com/digis/jobworker/jobs/control"
	"github.com/digis/jobworker/qstashdev"
	"github.com/digis/jobworker/qstashdev/qstashdevtest"
)

const token = "console-test-token-0123456789abcdef"

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

type env struct {
	srv   *httptest.Server
	qs    *qstashdevtest.Server
	log   *logtest.Buffer
	clock *clock
	cfg   opsconsole.Config
}

// start serves the console on a real Redis and a real qstash-dev, with a
// queue "q1" to act on.
func start(t *testing.T) *env {
	t.Helper()
	rs := redistest.Start(t)
	qs := qstashdevtest.Start(t, qstashdev.Config{})
	ctl, err := control.New(control.Config{QStashURL: qs.URL, Token: qstashdev.DevToken, WorkerPublicURL: "http://worker.test"})
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodPost, qs.URL+"/v2/queues", strings.NewReader(`{"queueName":"q1","parallelism":1}`))
	req.Header.Set("Authorization", "Bearer "+qstashdev.DevToken)
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	e := &env{qs: qs, log: &logtest.Buffer{}, clock: &clock{t: time.Now()}}
	rdb := rs.Client(t)
	e.cfg = opsconsole.Config{Token: token, Stats: opsstats.NewReader(rdb, ""), Jobs: opsadapter.NewQStash(ctl),
		Keys: opsadapter.NewKeys(rdb, "", time.Second), Logger: slog.New(slog.NewTextHandler(e.log, nil)), Now: e.clock.Now}
	h, err := opsconsole.New(e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle(opsconsole.Path, h)
	e.srv = httptest.NewServer(mux)
	t.Cleanup(e.srv.Close)
	return e
}

var noRedirect = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

func (e *env) do(t *testing.T, method, path string, hdr map[string]string, body string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(method, e.srv.URL+path, strings.NewReader(body))
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	res, err := noRedirect.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res, string(b)
}

// signIn posts the token and returns the session cookie and the page's
// CSRF token.
func (e *env) signIn(t *testing.T) (cookie, csrf string) {
	t.Helper()
	res, _ := e.do(t, http.MethodPost, "/ops/login", map[string]string{"Content-Type": "application/x-www-form-urlencoded"},
		url.Values{"token": {token}}.Encode())
	if res.StatusCode != http.StatusSeeOther || res.Header.Get("Location") != "/ops/" {
		t.Fatalf("sign-in: %d → %s", res.StatusCode, res.Header.Get("Location"))
	}
	var c *http.Cookie
	for _, x := range res.Cookies() {
		c = x
	}
	if c == nil || !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Path != "/ops/" {
		t.Fatalf("session cookie %+v: want HttpOnly, SameSite=Strict, Path=/ops/", c)
	}
	cookie = c.Name + "=" + c.Value
	_, page := e.do(t, http.MethodGet, "/ops/", map[string]string{"Cookie": cookie}, "")
	m := regexp.MustCompile(`name="csrf-token" content="([0-9a-f]+)"`).FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("no CSRF token in the page:\n%s", page)
	}
	return cookie, m[1]
}

func TestConfig(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		given opsconsole.Config
		want  string
	}{
		{"no token", opsconsole.Config{Stats: &opsstats.Reader{}}, "Token"},
		{"short token", opsconsole.Config{Token: "short", Stats: &opsstats.Reader{}}, "Token"},
		{"spaces", opsconsole.Config{Token: " " + token, Stats: &opsstats.Reader{}}, "Token"},
		{"no stats", opsconsole.Config{Token: token}, "Stats"},
	}
	for _, tt := range tests {
		_, err := opsconsole.New(tt.given)
		var ce *opsconsole.ConfigError
		if !errors.As(err, &ce) || ce.Field != tt.want || !errors.Is(err, opsconsole.ErrInvalidConfig) {
			t.Errorf("%s: err = %v, want a ConfigError on %s", tt.name, err, tt.want)
		}
	}
}

// Without the credential nothing is shown and nothing is done; the page
// itself sends to the sign-in form.
func TestRefusedWithoutCredential(t *testing.T) {
	t.Parallel()
	e := start(t)
	res, _ := e.do(t, http.MethodGet, "/ops/", nil, "")
	if res.StatusCode != http.StatusSeeOther || res.Header.Get("Location") != "/ops/login" {
		t.Errorf("GET /ops/ without a session: %d → %q", res.StatusCode, res.Header.Get("Location"))
	}
	if csp := res.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") {
		t.Errorf("CSP = %q", csp)
	}
	for _, c := range []struct {
		method, path string
		hdr          map[string]string
	}{
		{http.MethodGet, "/ops/api/stats", nil},
		{http.MethodGet, "/ops/api/dlq", map[string]string{"Authorization": "Bearer wrong-token-wrong-token-wrong"}},
		{http.MethodPost, "/ops/api/queues/q1/pause", nil},
		{http.MethodPost, "/ops/api/dlq/1-0/retry", map[string]string{"Cookie": "jobworker_ops=9999999999.forged"}},
	} {
		res, _ := e.do(t, c.method, c.path, c.hdr, "")
		if res.StatusCode != http.StatusUnauthorized {
			t.Errorf("%s %s: %d, want 401", c.method, c.path, res.StatusCode)
		}
	}
	res, _ = e.do(t, http.MethodPost, "/ops/login", map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, "token=nope")
	if res.StatusCode != http.StatusSeeOther || len(res.Cookies()) != 0 || !strings.Contains(res.Header.Get("Location"), "failed") {
		t.Errorf("wrong token: %d, cookies %v", res.StatusCode, res.Cookies())
	}
	if queuePaused(t, e) {
		t.Fatal("a refused action paused the queue")
	}
	if !strings.Contains(e.log.String(), "action refused: no credential") {
		t.Errorf("refusals not logged:\n%s", e.log)
	}
}

// A signed-in browser's POST needs the page's CSRF token and must not come
// from another site.
func TestActionsNeedCSRF(t *testing.T) {
	t.Parallel()
	e := start(t)
	cookie, csrf := e.signIn(t)
	for _, c := range []struct {
		name string
		hdr  map[string]string
	}{
		{"no token", map[string]string{"Cookie": cookie}},
		{"wrong token", map[string]string{"Cookie": cookie, "X-CSRF-Token": strings.Repeat("0", len(csrf))}},
		{"cross-site", map[string]string{"Cookie": cookie, "X-CSRF-Token": csrf, "Sec-Fetch-Site": "cross-site"}},
	} {
		res, _ := e.do(t, http.MethodPost, "/ops/api/queues/q1/pause", c.hdr, "")
		if res.StatusCode != http.StatusForbidden {
			t.Errorf("%s: %d, want 403", c.name, res.StatusCode)
		}
	}
	if queuePaused(t, e) {
		t.Fatal("a refused action paused the queue")
	}
	res, body := e.do(t, http.MethodPost, "/ops/api/queues/q1/pause", map[string]string{"Cookie": cookie, "X-CSRF-Token": csrf, "Sec-Fetch-Site": "same-origin"}, "")
	if res.StatusCode != http.StatusOK {
		t.Fatalf("pause with the CSRF token: %d %s", res.StatusCode, body)
	}
	if !queuePaused(t, e) {
		t.Fatal("the queue is not paused")
	}
	if l := e.log.String(); !strings.Contains(l, "action=queue.pause name=q1") || !strings.Contains(l, "result=ok") || strings.Contains(l, token) {
		t.Errorf("action log:\n%s", l)
	}
	// A DLQ id QStash does not know: 404, logged.
	res, _ = e.do(t, http.MethodPost, "/ops/api/dlq/1-0/retry", map[string]string{"Cookie": cookie, "X-CSRF-Token": csrf}, "")
	if res.StatusCode != http.StatusNotFound || !strings.Contains(e.log.String(), "result=not_found") {
		t.Errorf("retry of an unknown entry: %d", res.StatusCode)
	}
	// Scripts use the bearer token, no CSRF token needed.
	res, _ = e.do(t, http.MethodPost, "/ops/api/queues/q1/resume", map[string]string{"Authorization": "Bearer " + token}, "")
	if res.StatusCode != http.StatusOK || queuePaused(t, e) {
		t.Errorf("resume with the bearer token: %d", res.StatusCode)
	}
}

// Sessions end: after their TTL, and for everyone when the token changes.
func TestSessionsEnd(t *testing.T) {
	t.Parallel()
	e := start(t)
	cookie, _ := e.signIn(t)
	if res, _ := e.do(t, http.MethodGet, "/ops/api/stats", map[string]string{"Cookie": cookie}, ""); res.StatusCode != http.StatusOK {
		t.Fatalf("stats with a session: %d", res.StatusCode)
	}
	cfg := e.cfg
	cfg.Token = token + "-rotated"
	h, err := opsconsole.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	rotated := httptest.NewServer(h)
	defer rotated.Close()
	req, _ := http.NewRequest(http.MethodGet, rotated.URL+"/ops/api/stats", nil)
	req.Header.Set("Cookie", cookie)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusUnauthorized {
		t.Errorf("old session after a token rotation: %d, want 401", res.StatusCode)
	}
	e.clock.Add(12*time.Hour + time.Second)
	if res, _ := e.do(t, http.MethodGet, "/ops/api/stats", map[string]string{"Cookie": cookie}, ""); res.StatusCode != http.StatusUnauthorized {
		t.Errorf("expired session: %d, want 401", res.StatusCode)
	}
}

func TestBadInput(t *testing.T) {
	t.Parallel()
	e := start(t)
	auth := map[string]string{"Authorization": "Bearer " + token}
	for _, path := range []string{"/ops/api/stats?minutes=0", "/ops/api/stats?minutes=x", "/ops/api/events?limit=100000", "/ops/api/events?job=a%20b"} {
		if res, _ := e.do(t, http.MethodGet, path, auth, ""); res.StatusCode != http.StatusBadRequest {
			t.Errorf("GET %s: %d, want 400", path, res.StatusCode)
		}
	}
	if res, _ := e.do(t, http.MethodPost, "/ops/api/queues/a%25b/pause", auth, ""); res.StatusCode != http.StatusBadRequest {
		t.Errorf("a queue name with %%: %d, want 400", res.StatusCode)
	}
	if res, _ := e.do(t, http.MethodGet, "/ops/static/../opsconsole.go", auth, ""); res.StatusCode == http.StatusOK {
		t.Error("a file outside the assets was served")
	}
}

func queuePaused(t *testing.T, e *env) bool {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, e.qs.URL+"/v2/queues/q1", nil)
	req.Header.Set("Authorization", "Bearer "+qstashdev.DevToken)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return strings.Contains(string(b), `"paused":true`)
}
