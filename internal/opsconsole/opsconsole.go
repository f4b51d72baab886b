// Package opsconsole is the ops console: one page under /ops/ an on-call
// engineer opens first. It shows the fleet-wide numbers every process
// flushes to Redis (package opsstats: deliveries, rate-limit decisions,
// cache outcomes, idempotency, the outbox), QStash's own view of the jobs
// (events, attempts, DLQ, schedules, queues) and a sampled view of the Redis
// keys, and lets the operator retry or delete a dead job and pause or
// resume a queue.
//
//	h, err := opsconsole.New(opsconsole.Config{Token: os.Getenv("OPS_TOKEN"),
//		Stats: opsstats.NewReader(rdb, prefix), Jobs: jobs, Keys: keys, Logger: log})
//	mux.Handle(opsconsole.Path, h)
//
// It is off unless a token is configured (the binaries mount it only when
// OPS_TOKEN is set). The page, its script and styles are embedded: no CDN.
// Every action is a POST that needs the credential and, from a browser, the
// CSRF token; every action is logged with its outcome. Nothing shown is
// personal: job names, message and DLQ ids, states, HTTP statuses, counts,
// and the rate-limit identities as the HMACs the limiter stores.
package opsconsole

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/digis/jobworker/internal/opsstats"
)

// Path is where the console is mounted.
const Path = "/ops/"

// MinTokenLength is the shortest token accepted: long enough that guessing
// it over HTTP is hopeless.
const MinTokenLength = 24

//go:embed assets
var assets embed.FS

// ErrInvalidConfig is matched by every *ConfigError.
var ErrInvalidConfig = errors.New("opsconsole: invalid config")

// ConfigError names the Config field that is wrong.
type ConfigError struct{ Field, Reason string }

func (e *ConfigError) Error() string {
	return ErrInvalidConfig.Error() + ": " + e.Field + " " + e.Reason
}

// Is makes errors.Is(err, ErrInvalidConfig) true.
func (e *ConfigError) Is(target error) bool { return target == ErrInvalidConfig }

// Config configures the console.
type Config struct {
	// Token is the operator's credential (OPS_TOKEN), at least
	// MinTokenLength characters. Required.
	Token string
	// Stats reads the fleet-wide numbers. Required.
	Stats *opsstats.Reader
	// Jobs is QStash's job control. Defaults to none: the jobs view says
	// it is not configured.
	Jobs Jobs
	// Keys samples the Redis keys. Defaults to none.
	Keys Keys
	// Logger receives one line per action and per refused credential.
	// Defaults to discarding.
	Logger *slog.Logger
	// SessionTTL is how long a sign-in lasts. Defaults to 12h.
	SessionTTL time.Duration
	// Timeout bounds each call to Redis or QStash. Defaults to 5s.
	Timeout time.Duration
	// Now is the clock. Defaults to time.Now.
	Now func() time.Time
}

// Validate reports the first invalid field as a *ConfigError.
func (c Config) Validate() error {
	switch {
	case len(c.Token) < MinTokenLength:
		return &ConfigError{"Token", "must be at least " + strconv.Itoa(MinTokenLength) + " characters"}
	case strings.TrimSpace(c.Token) != c.Token:
		return &ConfigError{"Token", "must not start or end with white space"}
	case c.Stats == nil:
		return &ConfigError{"Stats", "is required"}
	case c.SessionTTL < 0 || c.Timeout < 0:
		return &ConfigError{"SessionTTL", "and Timeout must not be negative"}
	}
	return nil
}

type console struct {
	cfg    Config
	auth   *authority
	mux    *http.ServeMux
	page   *template.Template
	static http.Handler
}

// New builds the console's handler, to be mounted at Path.
func New(cfg Config) (http.Handler, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.SessionTTL == 0 {
		cfg.SessionTTL = 12 * time.Hour
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	page, err := template.ParseFS(assets, "assets/index.html", "assets/login.html")
	if err != nil {
		return nil, err
	}
	sub, err := fs.Sub(assets, "assets")
	if err != nil {
		return nil, err
	}
	c := &console{cfg: cfg, auth: newAuthority(cfg.Token, cfg.SessionTTL, cfg.Now), mux: http.NewServeMux(),
		page: page, static: http.StripPrefix(Path+"static/", http.FileServerFS(sub))}
	c.routes()
	return c, nil
}

func (c *console) routes() {
	m := c.mux
	m.HandleFunc("GET "+Path+"{$}", c.index)
	m.HandleFunc("GET "+Path+"login", c.loginForm)
	m.HandleFunc("POST "+Path+"login", c.login)
	m.HandleFunc("POST "+Path+"logout", c.logout)
	m.HandleFunc("GET "+Path+"static/", func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case Path + "static/app.js", Path + "static/app.css":
			w.Header().Set("Cache-Control", "no-cache")
			c.static.ServeHTTP(w, r)
		default:
			http.NotFound(w, r)
		}
	})
	m.HandleFunc("GET "+Path+"api/stats", c.read(c.stats))
	m.HandleFunc("GET "+Path+"api/events", c.read(c.events))
	m.HandleFunc("GET "+Path+"api/dlq", c.read(c.deadLetters))
	m.HandleFunc("GET "+Path+"api/schedules", c.read(c.schedules))
	m.HandleFunc("GET "+Path+"api/queues", c.read(c.queues))
	m.HandleFunc("GET "+Path+"api/keys", c.read(c.keys))
	m.HandleFunc("POST "+Path+"api/dlq/{id}/retry", c.action("dlq.retry", "id", func(ctx context.Context, j Jobs, id string) error { return j.RetryDeadLetter(ctx, id) }))
	m.HandleFunc("POST "+Path+"api/dlq/{id}/delete", c.action("dlq.delete", "id", func(ctx context.Context, j Jobs, id string) error { return j.DeleteDeadLetter(ctx, id) }))
	m.HandleFunc("POST "+Path+"api/queues/{name}/pause", c.action("queue.pause", "name", func(ctx context.Context, j Jobs, n string) error { return j.PauseQueue(ctx, n) }))
	m.HandleFunc("POST "+Path+"api/queues/{name}/resume", c.action("queue.resume", "name", func(ctx context.Context, j Jobs, n string) error { return j.ResumeQueue(ctx, n) }))
}

func (c *console) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
	c.mux.ServeHTTP(w, r)
}

func (c *console) index(w http.ResponseWriter, r *http.Request) {
	s := c.auth.session(r)
	if s == "" {
		http.Redirect(w, r, Path+"login", http.StatusSeeOther)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_ = c.page.ExecuteTemplate(w, "index.html", map[string]string{"CSRF": c.auth.csrf(s)})
}

func (c *console) loginForm(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_ = c.page.ExecuteTemplate(w, "login.html", map[string]bool{"Failed": r.URL.Query().Has("failed")})
}

func (c *console) login(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 4096)
	if !sameSite(r) {
		c.cfg.Logger.Warn("ops console: cross-site sign-in refused")
		http.Error(w, "cross-site request refused", http.StatusForbidden)
		return
	}
	if !c.auth.tokenOK(r.PostFormValue("token")) {
		c.cfg.Logger.Warn("ops console: sign-in with a wrong token refused")
		http.Redirect(w, r, Path+"login?failed", http.StatusSeeOther)
		return
	}
	v, exp := c.auth.newSession()
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: v, Path: Path, Expires: exp,
		HttpOnly: true, Secure: secureRequest(r), SameSite: http.SameSiteStrictMode})
	c.cfg.Logger.Info("ops console: signed in", "who", c.auth.sessionName(v))
	http.Redirect(w, r, Path, http.StatusSeeOther)
}

func (c *console) logout(w http.ResponseWriter, r *http.Request) {
	if c.authorizeAction(w, r, "logout") {
		http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: "", Path: Path, MaxAge: -1,
			HttpOnly: true, Secure: secureRequest(r), SameSite: http.SameSiteStrictMode})
		w.WriteHeader(http.StatusNoContent)
	}
}

// read serves a GET of the API: a session or the bearer token.
func (c *console) read(f func(ctx context.Context, r *http.Request) (any, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if c.auth.session(r) == "" && !c.auth.bearer(r) {
			writeJSON(w, http.StatusUnauthorized, problem("sign in first"))
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), c.cfg.Timeout)
		defer cancel()
		v, err := f(ctx, r)
		if err != nil {
			status := http.StatusBadGateway
			var ue userError
			switch {
			case errors.As(err, &ue):
				status = ue.status
			case errors.Is(err, ErrNotFound):
				status = http.StatusNotFound
			}
			c.cfg.Logger.Warn("ops console: read failed", "path", r.URL.Path, "status", status, "error", err.Error())
			writeJSON(w, status, problem(publicMessage(status, err)))
			return
		}
		writeJSON(w, http.StatusOK, v)
	}
}

// authorizeAction checks a POST's credential and CSRF token, answering
// and logging the refusal itself.
func (c *console) authorizeAction(w http.ResponseWriter, r *http.Request, action string) bool {
	if c.auth.bearer(r) {
		return true
	}
	s := c.auth.session(r)
	if s == "" {
		c.cfg.Logger.Warn("ops console: action refused: no credential", "action", action)
		writeJSON(w, http.StatusUnauthorized, problem("sign in first"))
		return false
	}
	if !sameSite(r) || !hmacEqual(r.Header.Get(csrfHeader), c.auth.csrf(s)) {
		c.cfg.Logger.Warn("ops console: action refused: CSRF check failed", "action", action, "who", c.auth.who(r))
		writeJSON(w, http.StatusForbidden, problem("CSRF check failed: reload the page"))
		return false
	}
	return true
}

// action serves a POST that changes something at QStash.
func (c *console) action(name, param string, do func(context.Context, Jobs, string) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !c.authorizeAction(w, r, name) {
			return
		}
		target := r.PathValue(param)
		if !validName(target) {
			writeJSON(w, http.StatusBadRequest, problem("invalid "+param))
			return
		}
		if c.cfg.Jobs == nil {
			writeJSON(w, http.StatusNotImplemented, problem("job control is not configured"))
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), c.cfg.Timeout)
		defer cancel()
		err := do(ctx, c.cfg.Jobs, target)
		who := c.auth.who(r)
		switch {
		case err == nil:
			c.cfg.Logger.Info("ops console: action", "action", name, param, target, "who", who, "result", "ok")
			writeJSON(w, http.StatusOK, map[string]string{"result": "ok"})
		case errors.Is(err, ErrNotFound):
			c.cfg.Logger.Info("ops console: action", "action", name, param, target, "who", who, "result", "not_found")
			writeJSON(w, http.StatusNotFound, problem(param+" not found"))
		default:
			c.cfg.Logger.Warn("ops console: action", "action", name, param, target, "who", who, "result", "error", "error", err.Error())
			writeJSON(w, http.StatusBadGateway, problem("QStash did not do it; see the logs"))
		}
	}
}

// validName accepts QStash ids and queue names: short, no separators a
// URL could be bent with.
func validName(s string) bool {
	if s == "" || len(s) > 200 {
		return false
	}
	for _, r := range s {
		if r <= ' ' || r == '/' || r == '?' || r == '#' || r == '%' || r == '\\' || r > '~' {
			return false
		}
	}
	return true
}

type userError struct {
	status int
	msg    string
}

func (e userError) Error() string { return e.msg }

func badRequest(format string, args ...any) error {
	return userError{http.StatusBadRequest, fmt.Sprintf(format, args...)}
}

func publicMessage(status int, err error) string {
	var ue userError
	switch {
	case errors.As(err, &ue):
		return ue.msg
	case status == http.StatusNotFound:
		return "not found"
	}
	return "upstream unavailable; see the logs"
}

func problem(detail string) map[string]string { return map[string]string{"error": detail} }

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
