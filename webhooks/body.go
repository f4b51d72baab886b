package webhooks

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/digis/jobworker/internal/problem"
)

// DefaultMaxBodyBytes caps webhook bodies read by the middlewares: 1 MiB,
// above QStash's free-plan message size and far above Stripe's events
// (~20 KB; Stripe's own 64 KiB example has bitten people).
const DefaultMaxBodyBytes int64 = 1 << 20

// ReadBody reads r's whole body, at most limit bytes, and puts the bytes
// back on r so the handler can read them again. A declared Content-Length
// above limit is refused before reading; a body that turns out longer
// (chunked, or lying) is refused after limit+1 bytes. Either way the error
// is ErrBodyTooLarge. The bytes are exactly those received: nothing is
// decompressed or re-encoded, which is what the signatures cover.
func ReadBody(r *http.Request, limit int64) ([]byte, error) {
	if r.Body == nil || r.Body == http.NoBody {
		return []byte{}, nil
	}
	if r.ContentLength > limit {
		return nil, ErrBodyTooLarge
	}
	b, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("webhooks: reading body: %w", err)
	}
	if int64(len(b)) > limit {
		return nil, ErrBodyTooLarge
	}
	r.Body = io.NopCloser(bytes.NewReader(b))
	r.ContentLength = int64(len(b))
	return b, nil
}

// ParsePublicURL checks the public base URL a worker is reached at (the
// proposed WORKER_PUBLIC_URL): absolute http or https, a host, no user
// info, query or fragment. A trailing slash is removed, so
// "https://w.example.com/" and "https://w.example.com" give the same base.
// A path is kept: "https://example.com/worker" is right when a proxy
// strips "/worker" before the request reaches the worker.
func ParsePublicURL(s string) (string, error) {
	if strings.TrimSpace(s) != s || s == "" {
		return "", fmt.Errorf("webhooks: public URL is empty or has surrounding whitespace")
	}
	u, err := url.Parse(s)
	if err != nil { // url.Error would echo the value, user info included
		return "", fmt.Errorf("webhooks: public URL does not parse as a URL")
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return "", fmt.Errorf("webhooks: public URL %q: scheme must be http or https", s)
	case u.Host == "":
		return "", fmt.Errorf("webhooks: public URL %q: no host", s)
	case u.User != nil:
		return "", fmt.Errorf("webhooks: public URL must not carry user info")
	case u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || strings.ContainsAny(s, "?#"):
		return "", fmt.Errorf("webhooks: public URL %q: no query or fragment allowed", s)
	}
	return strings.TrimRight(s, "/"), nil
}

// ParseSecrets splits a comma-separated list of signing secrets (the
// proposed STRIPE_WEBHOOK_SECRET format during a roll: "whsec_new,whsec_old",
// newest first). Spaces around items are trimmed; an empty list or an empty
// item is an error that does not echo the value.
func ParseSecrets(s string) ([]string, error) {
	var out []string
	for item := range strings.SplitSeq(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			return nil, fmt.Errorf("webhooks: secret list is empty or has an empty item")
		}
		out = append(out, item)
	}
	return out, nil
}

// signedRequest reads a webhook's one signature header and its capped raw
// body. When either is unusable it answers the request itself (refuse, or
// 413 for a body over limit, as a problem without detail), reports the
// failed check through fail, and returns ok false with the answer's error.
func signedRequest(c echo.Context, header, source string, limit int64, refuse int,
	fail func(context.Context, error)) (sig string, body []byte, ok bool, err error) {
	req := c.Request()
	ctx := req.Context()
	sigs := req.Header.Values(header)
	switch len(sigs) {
	case 0:
		fail(ctx, newVerificationError(source, CheckMissing, nil))
		return "", nil, false, problem.Respond(c, refuse, "")
	case 1:
	default: // which one would the sender have meant? Neither.
		fail(ctx, newVerificationError(source, CheckMalformed, nil))
		return "", nil, false, problem.Respond(c, refuse, "")
	}
	body, rerr := ReadBody(req, limit)
	if rerr != nil {
		if errors.Is(rerr, ErrBodyTooLarge) {
			fail(ctx, newVerificationError(source, CheckBodyTooLarge, nil))
			return "", nil, false, problem.Respond(c, http.StatusRequestEntityTooLarge, "")
		}
		fail(ctx, newVerificationError(source, CheckBodyRead, rerr))
		return "", nil, false, problem.Respond(c, http.StatusBadRequest, "")
	}
	return sigs[0], body, true, nil
}
