package qstashdev_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/digis/jobworker/qstashdev"
	"github.com/digis/jobworker/qstashdev/qstashdevtest"
)

// call sends one request to srv with the given Host (empty: the server's
// address) and headers; it never sets Authorization itself.
func call(t *testing.T, srv *qstashdevtest.Server, method, path, host string, body string, hdr map[string]string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if host != "" {
		req.Host = host
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

// TestDriveBySSRFRefused replays the attack of a web page the developer
// opens: a cross-site text/plain POST (no preflight) with the public dev
// token in the query string, publishing to a private loopback service with
// the attacker's callback. It is refused before anything is published, and
// neither service is ever called.
func TestDriveBySSRFRefused(t *testing.T) {
	t.Parallel()
	var private, attacker atomic.Int32
	priv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { private.Add(1); io.WriteString(w, "secret") }))
	t.Cleanup(priv.Close)
	evil := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { attacker.Add(1) }))
	t.Cleanup(evil.Close)
	srv := qstashdevtest.Start(t, qstashdev.Config{TimeScale: 0.001})
	path := "/v2/publish/" + priv.URL + "/admin?qstash_token=" + url.QueryEscape(qstashdev.DevToken) +
		"&upstash-callback=" + url.QueryEscape(evil.URL+"/steal")
	for _, hdr := range []map[string]string{
		{"Content-Type": "text/plain", "Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors"},
		{"Content-Type": "text/plain", "Origin": "http://evil.example"},                    // an older browser: Origin only
		{"Content-Type": "text/plain", "Sec-Fetch-Site": "cross-site"},                     // Sec-Fetch only
		{"Content-Type": "text/plain", "Origin": "null"},                                   // a sandboxed frame
		{"Content-Type": "text/plain", "Sec-Fetch-Site": "same-site"},                      // another port of localhost
		{"Content-Type": "text/plain", "Origin": "http://localhost:1"},                     // another local origin
		{"Authorization": "Bearer " + qstashdev.DevToken, "Origin": "http://evil.example"}, // even with the header token
	} {
		if status, body := call(t, srv, http.MethodPost, path, "", "x", hdr); status != http.StatusForbidden {
			t.Errorf("%v: %d %s, want 403", hdr, status, body)
		}
	}
	// Same-origin requests and SDKs (no Origin, no Sec-Fetch-Site) pass.
	own := "http://" + strings.TrimPrefix(srv.URL, "http://")
	if status, body := call(t, srv, http.MethodGet, "/v2/keys", "", "", map[string]string{
		"Authorization": "Bearer " + qstashdev.DevToken, "Origin": own, "Sec-Fetch-Site": "same-origin"}); status != http.StatusOK {
		t.Fatalf("same-origin: %d %s", status, body)
	}
	status, body := call(t, srv, http.MethodGet, "/v2/events", "", "", map[string]string{"Authorization": "Bearer " + qstashdev.DevToken})
	if status != http.StatusOK || strings.Contains(body, "/admin") {
		t.Fatalf("events after the refused publishes: %d %s", status, body)
	}
	if private.Load() != 0 || attacker.Load() != 0 {
		t.Fatalf("private service called %d times, attacker %d", private.Load(), attacker.Load())
	}
}

// TestForeignHostRefused: a page that rebinds its own name to 127.0.0.1
// reaches the server with its name in Host; only localhost, IP literals
// and the configured names are answered.
func TestForeignHostRefused(t *testing.T) {
	t.Parallel()
	srv := qstashdevtest.Start(t, qstashdev.Config{AllowedHosts: []string{"qstash-dev"}})
	_, port, _ := strings.Cut(strings.TrimPrefix(srv.URL, "http://"), ":")
	auth := map[string]string{"Authorization": "Bearer " + qstashdev.DevToken}
	for _, tc := range []struct {
		host string
		want int
	}{
		{"rebind.evil.example:" + port, http.StatusMisdirectedRequest},
		{"rebind.evil.example", http.StatusMisdirectedRequest},
		{"localhost.evil.example:" + port, http.StatusMisdirectedRequest},
		{"qstash-dev.evil.example", http.StatusMisdirectedRequest},
		{"localhost:" + port, http.StatusOK},
		{"LOCALHOST.:" + port, http.StatusOK},
		{"127.0.0.1:" + port, http.StatusOK},
		{"[::1]:" + port, http.StatusOK},
		{"qstash-dev:8080", http.StatusOK},
		{"qstash-dev", http.StatusOK},
	} {
		for _, path := range []string{"/v2/keys", "/v2/events"} {
			if status, body := call(t, srv, http.MethodGet, path, tc.host, "", auth); status != tc.want {
				t.Errorf("Host %s %s: %d %s, want %d", tc.host, path, status, body, tc.want)
			}
		}
	}
}

// TestQueryTokenOnlyWhenAsked: ?qstash_token= is refused unless
// AllowQueryToken is set.
func TestQueryTokenOnlyWhenAsked(t *testing.T) {
	t.Parallel()
	path := "/v2/keys?qstash_token=" + url.QueryEscape(qstashdev.DevToken)
	for _, tc := range []struct {
		allow bool
		want  int
	}{{false, http.StatusUnauthorized}, {true, http.StatusOK}} {
		srv := qstashdevtest.Start(t, qstashdev.Config{AllowQueryToken: tc.allow})
		if status, body := call(t, srv, http.MethodGet, path, "", "", nil); status != tc.want {
			t.Errorf("AllowQueryToken=%v: %d %s, want %d", tc.allow, status, body, tc.want)
		}
	}
}

// FuzzGuard: the front check never panics, never lets a foreign Origin
// through, and answers a foreign Host name 421.
func FuzzGuard(f *testing.F) {
	f.Add("127.0.0.1:8080", "http://127.0.0.1:8080", "same-origin")
	f.Add("evil.example", "", "")
	f.Add("[::1]:1", "null", "cross-site")
	f.Add("localhost", "http://localhost", "none")
	srv, err := qstashdev.New(qstashdev.Config{AllowedHosts: []string{"qstash-dev"}})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { srv.Close() })
	h := srv.Handler()
	f.Fuzz(func(t *testing.T, host, origin, site string) {
		req := httptest.NewRequest(http.MethodGet, "http://x/v2/keys", nil)
		req.Host = host
		if origin != "" {
			req.Header.Set("Origin", origin)
		}
		if site != "" {
			req.Header.Set("Sec-Fetch-Site", site)
		}
		req.Header.Set("Authorization", "Bearer "+qstashdev.DevToken)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code == http.StatusOK && origin != "" && !strings.EqualFold(origin, "http://"+host) && !strings.EqualFold(origin, "https://"+host) {
			t.Fatalf("Origin %q admitted for Host %q", origin, host)
		}
		name := strings.ToLower(host)
		if rec.Code == http.StatusOK && strings.Contains(name, "evil") {
			t.Fatalf("Host %q admitted", host)
		}
	})
}
