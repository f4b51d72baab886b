package control

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/digis/jobworker/internal/publicurl"
	"github.com/digis/jobworker/jobs"
)

// DefaultTimeout bounds one QStash call unless Config.Timeout says otherwise.
const DefaultTimeout = 10 * time.Second

// DefaultApp is Config.App's default.
const DefaultApp = "jobworker"

// maxBody bounds what is read of one QStash answer (a DLQ page holds up to
// 100 messages with their bodies and responses).
const maxBody = 256 << 20

// Config configures a Client.
type Config struct {
	// QStashURL is the QStash API base URL (QSTASH_URL). Defaults to
	// jobs.DefaultQStashURL.
	QStashURL string
	// Token is the QStash token (QSTASH_TOKEN). Required. Never logged.
	Token string
	// WorkerPublicURL is the worker's public base URL (WORKER_PUBLIC_URL),
	// as given to jobs.ClientConfig. It turns job names into destinations:
	// Job filters and schedule sync need it. Defaults to none (Job filters
	// and schedule sync are refused; Job fields are still read from the
	// destination's path).
	WorkerPublicURL string
	// App names the owner of the schedules SyncSchedules creates: their ids
	// are App + "." + the declaration's name, and sync only ever deletes
	// schedules with that prefix, its marker header and a destination under
	// WorkerPublicURL. Letters, digits, '-', '_'. Defaults to DefaultApp.
	App string
	// HTTPClient carries the calls. Its Timeout, when set, becomes the
	// default of Timeout. Defaults to a client with connect, TLS and
	// response-header timeouts.
	HTTPClient *http.Client
	// Timeout bounds one call (on top of the caller's context). Defaults to
	// HTTPClient.Timeout when set, else DefaultTimeout.
	Timeout time.Duration
}

// Validate reports missing or malformed fields, each a *ConfigError
// (joined when several are wrong).
func (c Config) Validate() error {
	var errs []error
	bad := func(field, reason string) {
		errs = append(errs, &ConfigError{Field: "Config." + field, Reason: reason})
	}
	if c.Token == "" {
		bad("Token", "is required")
	}
	for field, v := range map[string]string{"QStashURL": c.QStashURL, "WorkerPublicURL": c.WorkerPublicURL} {
		if v == "" {
			continue
		}
		if _, err := publicurl.Parse(v); err != nil {
			var pe *publicurl.Error
			reason := "is not a valid base URL"
			if errors.As(err, &pe) {
				reason = pe.Reason
			}
			bad(field, reason)
		}
	}
	if c.App != "" && !validApp(c.App) {
		bad("App", "may only hold letters, digits, '-' and '_' (at most 40)")
	}
	if c.Timeout < 0 {
		bad("Timeout", "must not be negative, got "+c.Timeout.String())
	}
	return errors.Join(errs...)
}

func validApp(s string) bool {
	if len(s) > 40 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// Client calls QStash's REST API to inspect and steer jobs. It is safe for
// concurrent use.
type Client struct {
	base        string
	token       string
	destination string // WorkerPublicURL + jobs.PathPrefix, or ""
	app         string
	hc          *http.Client
	timeout     time.Duration
}

// New validates cfg and returns a Client.
func New(cfg Config) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	base := jobs.DefaultQStashURL
	if cfg.QStashURL != "" {
		base, _ = publicurl.Parse(cfg.QStashURL)
	}
	c := &Client{base: base, token: cfg.Token, app: cfg.App, hc: cfg.HTTPClient, timeout: cfg.Timeout}
	if cfg.WorkerPublicURL != "" {
		w, _ := publicurl.Parse(cfg.WorkerPublicURL)
		c.destination = w + jobs.PathPrefix
	}
	if c.app == "" {
		c.app = DefaultApp
	}
	if c.hc == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.DialContext = (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext
		t.TLSHandshakeTimeout = 5 * time.Second
		t.ResponseHeaderTimeout = DefaultTimeout
		c.hc = &http.Client{Transport: t}
	}
	if c.timeout == 0 {
		c.timeout = c.hc.Timeout
	}
	if c.timeout == 0 {
		c.timeout = DefaultTimeout
	}
	return c, nil
}

// Destination returns the URL QStash delivers the named job to, or "" when
// Config.WorkerPublicURL is not set.
func (c *Client) Destination(job string) string {
	if c.destination == "" {
		return ""
	}
	return c.destination + job
}

// jobOf reads the job name from a destination: the path after the last
// jobs.PathPrefix, or "" when the URL is not a job route.
func jobOf(dest string) string {
	u, err := url.Parse(dest)
	if err != nil {
		return ""
	}
	i := strings.LastIndex(u.Path, jobs.PathPrefix)
	if i < 0 {
		return ""
	}
	name := u.Path[i+len(jobs.PathPrefix):]
	if jobs.ValidateName(name) != nil {
		return ""
	}
	return name
}

// jobURL turns a Job filter into the destination QStash filters on.
func (c *Client) jobURL(job string) (string, error) {
	if job == "" {
		return "", nil
	}
	if err := jobs.ValidateName(job); err != nil {
		return "", invalid("job filter: %v", err)
	}
	if c.destination == "" {
		return "", invalid("a Job filter needs Config.WorkerPublicURL")
	}
	return c.destination + job, nil
}

// call is one REST call: method on base+path with query, an optional
// header and body; a 2xx answer is decoded into out (when non-nil).
type call struct {
	op     string
	method string
	path   string // escaped, from "/v2/"
	query  url.Values
	header http.Header
	body   []byte
	out    any
}

func (c *Client) do(ctx context.Context, k call) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	u := c.base + k.path
	if len(k.query) > 0 {
		u += "?" + k.query.Encode()
	}
	var body io.Reader
	if k.body != nil {
		body = bytes.NewReader(k.body)
	}
	req, err := http.NewRequestWithContext(ctx, k.method, u, body)
	if err != nil {
		return 0, &APIError{Op: k.op, Err: err}
	}
	for name, vs := range k.header {
		req.Header[name] = vs
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	resp, err := c.hc.Do(req)
	if err != nil {
		return 0, &APIError{Op: k.op, Err: scrub(err)}
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return 0, &APIError{Op: k.op, Err: err}
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		ae := &APIError{Op: k.op, StatusCode: resp.StatusCode, Message: errorText(raw)}
		if n, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && n >= 0 {
			ae.RetryAfter = time.Duration(n) * time.Second
		}
		return resp.StatusCode, ae
	}
	if k.out != nil && len(bytes.TrimSpace(raw)) > 0 {
		if err := json.Unmarshal(raw, k.out); err != nil {
			return resp.StatusCode, &APIError{Op: k.op, StatusCode: resp.StatusCode, Message: "undecodable answer: " + err.Error()}
		}
	}
	return resp.StatusCode, nil
}

// scrub drops the URL from a transport error: a query may hold ids an
// operator would rather not see in logs, and never a token, but keep the
// cause (deadline, refused connection) for errors.Is.
func scrub(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// errorText is QStash's {"error": "..."} text, or the start of the body.
func errorText(raw []byte) string {
	var e struct {
		Error string `json:"error"`
	}
	s := strings.TrimSpace(string(raw))
	if json.Unmarshal(raw, &e) == nil && e.Error != "" {
		s = e.Error
	}
	if len(s) > 300 {
		s = s[:300]
	}
	return s
}

func needID(what, id string) error {
	if strings.TrimSpace(id) == "" {
		return invalid("empty %s", what)
	}
	return nil
}

// millis renders a time as QStash's unix milliseconds, "" for the zero time.
func millis(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return strconv.FormatInt(t.UnixMilli(), 10)
}

func fromMillis(ms int64) time.Time {
	if ms <= 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms)
}

// setQ sets name=v in q unless v is empty.
func setQ(q url.Values, name, v string) {
	if v != "" {
		q.Set(name, v)
	}
}

// Page selects one page of a listing.
type Page struct {
	// Cursor is the previous page's Cursor; "" for the first page.
	Cursor string
	// Count is the page size. Defaults to QStash's (100); QStash caps it.
	Count int
}

func (p Page) apply(q url.Values) error {
	if p.Count < 0 {
		return invalid("negative page count %d", p.Count)
	}
	setQ(q, "cursor", p.Cursor)
	if p.Count > 0 {
		q.Set("count", strconv.Itoa(p.Count))
	}
	return nil
}
