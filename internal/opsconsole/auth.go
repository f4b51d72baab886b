package opsconsole

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Credentials: the operator signs in once with the token (a form POST);
// the console then holds a session cookie (HttpOnly, SameSite=Strict, Path
// /ops/) that carries its expiry and an HMAC of it under a key derived from
// the token, so rotating OPS_TOKEN ends every session. Scripts may send
// "Authorization: Bearer <token>" instead. A POST action with a session
// also needs the X-CSRF-Token header (an HMAC of the session the page got
// in its HTML) and no cross-site Sec-Fetch-Site: a form on another site
// cannot act with the operator's cookie.

const (
	sessionCookie = "jobworker_ops"
	csrfHeader    = "X-CSRF-Token"
)

type authority struct {
	token []byte
	key   []byte
	ttl   time.Duration
	now   func() time.Time
}

func newAuthority(token string, ttl time.Duration, now func() time.Time) *authority {
	k := sha256.Sum256([]byte("jobworker ops console session\x00" + token))
	return &authority{token: []byte(token), key: k[:], ttl: ttl, now: now}
}

func (a *authority) mac(parts ...string) string {
	m := hmac.New(sha256.New, a.key)
	m.Write([]byte(strings.Join(parts, "\x00")))
	return hex.EncodeToString(m.Sum(nil))
}

// tokenOK compares in constant time (the length is not secret).
func (a *authority) tokenOK(t string) bool {
	return subtle.ConstantTimeCompare([]byte(t), a.token) == 1
}

func (a *authority) newSession() (value string, expires time.Time) {
	expires = a.now().Add(a.ttl)
	exp := strconv.FormatInt(expires.Unix(), 10)
	return exp + "." + a.mac("session", exp), expires
}

// session returns the request's valid session cookie, or "".
func (a *authority) session(r *http.Request) string {
	c, err := r.Cookie(sessionCookie)
	if err != nil {
		return ""
	}
	exp, sig, ok := strings.Cut(c.Value, ".")
	if !ok {
		return ""
	}
	n, err := strconv.ParseInt(exp, 10, 64)
	if err != nil || a.now().Unix() >= n {
		return ""
	}
	if !hmac.Equal([]byte(sig), []byte(a.mac("session", exp))) {
		return ""
	}
	return c.Value
}

func (a *authority) csrf(session string) string { return a.mac("csrf", session) }

// bearer reports whether the request carries the token itself.
func (a *authority) bearer(r *http.Request) bool {
	h := r.Header.Get("Authorization")
	t, ok := strings.CutPrefix(h, "Bearer ")
	return ok && a.tokenOK(strings.TrimSpace(t))
}

// who is the request's credential kind, for the action log: never the
// token or the cookie, only a short digest of the session.
func (a *authority) who(r *http.Request) string {
	if a.bearer(r) {
		return "bearer"
	}
	if s := a.session(r); s != "" {
		return a.sessionName(s)
	}
	return "none"
}

// sessionName tells one session's actions from another's in the log.
func (a *authority) sessionName(session string) string { return "session:" + a.mac("who", session)[:8] }

// sameSite refuses requests a browser marks as coming from another site;
// requests without the header (curl, old browsers) go on to the other
// checks.
func sameSite(r *http.Request) bool {
	switch r.Header.Get("Sec-Fetch-Site") {
	case "", "same-origin", "none":
		return true
	}
	return false
}

func secureRequest(r *http.Request) bool {
	return r.TLS != nil || strings.EqualFold(r.Header.Get("X-Forwarded-Proto"), "https")
}

func hmacEqual(a, b string) bool { return a != "" && hmac.Equal([]byte(a), []byte(b)) }
