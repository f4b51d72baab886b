package server_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/labstack/echo/v4"

	"github.com/digis/jobworker/internal/logtest"
	"github.com/digis/jobworker/server"
)

// What a handler, and work it starts under the request's context, adds with
// AddLogAttrs lands on the request's one access line, after the line's own
// fields; once the line is written, AddLogAttrs says so.
func TestAccessLineCarriesHandlerAttrs(t *testing.T) {
	t.Parallel()
	var out logtest.Buffer
	s := newServer(t, server.Config{Logger: server.NewLogger(&out, "json", slog.LevelInfo).With("service", "test")})
	late := make(chan context.Context, 1)
	s.Echo.POST("/jobs/:name", func(c echo.Context) error {
		ctx := context.WithoutCancel(c.Request().Context()) // as the worker runs a job
		if !server.AddLogAttrs(ctx, slog.String("job", "demo.hello"), slog.String("outcome", "done")) {
			t.Error("AddLogAttrs: no line to carry the attributes")
		}
		for i := range 20 { // past what a line holds without allocating
			server.AddLogAttrs(ctx, slog.Int("n"+string(rune('a'+i)), i))
		}
		late <- ctx
		return c.NoContent(http.StatusOK)
	})
	base, stop := start(t, s)
	req, _ := http.NewRequest(http.MethodPost, base+"/jobs/demo.hello", nil)
	req.Header.Set("X-Request-Id", "req-1")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if err := stop(); err != nil { // the line is written before the answer ends; stop to be sure
		t.Fatal(err)
	}
	if server.AddLogAttrs(<-late, slog.String("after", "x")) {
		t.Error("AddLogAttrs after the line was written claims it will be carried")
	}
	var lines []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("line %q: %v", l, err)
		}
		if m["msg"] == "request" {
			lines = append(lines, m)
		}
	}
	if len(lines) != 1 {
		t.Fatalf("%d access lines, want 1:\n%s", len(lines), out.String())
	}
	m := lines[0]
	for k, want := range map[string]any{
		"service": "test", "server": "test", "request_id": "req-1", "method": "POST", "route": "/jobs/:name",
		"status": 200.0, "job": "demo.hello", "outcome": "done", "na": 0.0, "nt": 19.0,
	} {
		if m[k] != want {
			t.Errorf("%s = %v, want %v", k, m[k], want)
		}
	}
	if _, ok := m["duration_us"].(float64); !ok {
		t.Errorf("no duration_us in %v", m)
	}
	if _, ok := m["after"]; ok {
		t.Error("an attribute added after the line was written is on it")
	}
	raw := out.String()
	if i, j := strings.Index(raw, `"duration_us"`), strings.Index(raw, `"job"`); i < 0 || j < i {
		t.Errorf("the line's own fields do not come first: %s", raw)
	}
}
