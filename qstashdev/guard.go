package qstashdev

import (
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
)

// guard is the front check of every request, before routing and before the
// token: a developer's browser must not be able to drive the server.
//
//   - Cross-site requests are refused (403): a Sec-Fetch-Site other than
//     same-origin or none, or an Origin that is not this server's own
//     address. Without this any web page the developer opens could POST a
//     text/plain publish (no preflight) that makes the server fetch a
//     loopback service and send the answer to a callback URL of the page's
//     choosing. SDKs and curl send neither header.
//   - Foreign Host names are refused (421): only localhost, IP literals
//     (which DNS rebinding cannot produce) and Config.AllowedHosts. A page
//     whose own name resolves to 127.0.0.1 (DNS rebinding) would otherwise
//     read /v2/keys and /v2/events.
//
// The token in the query string (?qstash_token=) is a separate switch
// (Config.AllowQueryToken): a URL is what a page can make a browser send.
func (s *Server) guard(next http.Handler) http.Handler {
	allowed := make(map[string]bool, len(s.cfg.AllowedHosts)+1)
	allowed["localhost"] = true
	for _, h := range s.cfg.AllowedHosts {
		allowed[strings.ToLower(strings.TrimSuffix(h, "."))] = true
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !hostAllowed(r.Host, allowed) {
			s.log.Warn("request for a foreign Host refused (add it with AllowedHosts / -allowed-hosts if it is this server's name)",
				"method", r.Method, "path", r.URL.Path)
			writeError(w, errorf(http.StatusMisdirectedRequest, "this server does not answer to that Host name; add it with -allowed-hosts"))
			return
		}
		if crossSite(r) {
			s.log.Warn("cross-site request refused", "method", r.Method, "path", r.URL.Path)
			writeError(w, errorf(http.StatusForbidden, "cross-site requests are refused"))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// hostAllowed reports whether the Host header (name or address, with or
// without a port) names this server.
func hostAllowed(hostport string, allowed map[string]bool) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if host == "" {
		return false
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return true
	}
	return allowed[strings.ToLower(strings.TrimSuffix(host, "."))]
}

// crossSite reports whether a browser sent r on behalf of another site.
func crossSite(r *http.Request) bool {
	switch r.Header.Get("Sec-Fetch-Site") {
	case "", "same-origin", "none":
	default: // cross-site, same-site (another port of localhost), or unknown
		return true
	}
	origins := r.Header.Values("Origin")
	if len(origins) == 0 {
		return false
	}
	if len(origins) > 1 {
		return true
	}
	u, err := url.Parse(origins[0])
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Path != "" {
		return true // "null" (a sandboxed page, a file) included
	}
	return !strings.EqualFold(u.Host, r.Host)
}
