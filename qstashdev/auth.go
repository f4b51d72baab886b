package qstashdev

import (
	"crypto/subtle"
	"net/http"
	"strings"
)

// authorized reports whether r carries the API token, as
// "Authorization: Bearer <token>" or, only with Config.AllowQueryToken (for
// webhook senders that cannot set headers), "?qstash_token=<token>". The
// comparison is constant-time.
func (s *Server) authorized(r *http.Request) bool {
	tok := ""
	if a := r.Header.Get("Authorization"); len(a) > 7 && strings.EqualFold(a[:7], "Bearer ") {
		tok = strings.TrimSpace(a[7:])
	} else if q := r.URL.Query().Get("qstash_token"); q != "" && s.cfg.AllowQueryToken {
		tok = q
	}
	if tok == "" {
		return false
	}
	if s.cfg.AllowAnyToken {
		return true
	}
	return subtle.ConstantTimeCompare([]byte(tok), []byte(s.cfg.Token)) == 1
}
