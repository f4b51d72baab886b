// Package publicurl holds the one rule for the base URLs the services are
// configured with (WORKER_PUBLIC_URL, QSTASH_URL): the jobs client, the
// QStash verifier and the worker all check them here, so they cannot
// disagree about what a valid base is.
package publicurl

import (
	"errors"
	"net/url"
	"strings"
)

// ErrInvalid is wrapped by every error Parse returns.
var ErrInvalid = errors.New("invalid base URL")

// Error says what is wrong with a base URL. It never repeats the value: a
// URL may carry credentials.
type Error struct{ Reason string }

func (e *Error) Error() string { return "base URL " + e.Reason }

// Is makes errors.Is(err, ErrInvalid) true.
func (e *Error) Is(target error) bool { return target == ErrInvalid }

// Parse checks s is an absolute http or https URL with a host, printable
// ASCII without spaces, and no user info, query or fragment, and returns it
// without trailing slashes ("https://w.example.com/" and
// "https://w.example.com" are the same base). A path is kept:
// "https://example.com/worker" is right when a proxy strips "/worker".
func Parse(s string) (string, error) {
	bad := func(reason string) (string, error) { return "", &Error{Reason: reason} }
	if s == "" {
		return bad("is empty")
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] > '~' {
			return bad("must be printable ASCII without spaces")
		}
	}
	u, err := url.Parse(s)
	if err != nil { // url.Error would echo the value
		return bad("does not parse as a URL")
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return bad("must use http:// or https://")
	case u.Host == "":
		return bad("has no host")
	case u.User != nil:
		return bad("must not carry user info")
	case u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || strings.ContainsAny(s, "?#"):
		return bad("must not have a query or fragment")
	}
	return strings.TrimRight(s, "/"), nil
}
