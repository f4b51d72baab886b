package webhooks

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/digis/jobworker/internal/problem"
	"github.com/digis/jobworker/internal/publicurl"
)

// DefaultMaxBodyBytes caps webhook bodies read by the middlewares: 1 MiB,
// above QStash's free-plan message size and far above Stripe's events
// (~20 KB; Stripe's own 64 KiB example has bitten people).
const DefaultMaxBodyBytes int64 = 1 << 20

// ReadBody reads r's whole body, at most limit bytes, and puts the bytes
// back on r so the handler can read them again. A declared Content-Length
// above limit is refused before reading; a body that turns out longer
// (chunked, or lying) is refused after limit+1 bytes, as is one a server's
// http.MaxBytesReader cut off first. Either way the error is
// ErrBodyTooLarge. The bytes are exactly those received: nothing is
// decompressed or re-encoded, which is what the signatures cover.
func ReadBody(r *http.Request, limit int64) ([]byte, error) {
	if r.Body == nil || r.Body == http.NoBody {
		return []byte{}, nil
	}
	if r.ContentLength > limit {
		return nil, ErrBodyTooLarge
	}
	b, err := readAtMost(r.Body, r.ContentLength, limit)
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return nil, ErrBodyTooLarge
	}
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

// readAtMost reads body to its end, at most limit+1 bytes (one past limit
// tells a longer body from one exactly at it). A declared length (at most
// limit) sizes the buffer once, where io.ReadAll starts at 512 bytes and
// grows by copying; a body longer than it declared reads on as one of
// unknown length.
func readAtMost(body io.Reader, declared, limit int64) ([]byte, error) {
	if declared < 0 || declared > limit {
		return io.ReadAll(io.LimitReader(body, limit+1))
	}
	b := make([]byte, 0, declared+1)
	for {
		n, err := body.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF {
			return b, nil
		}
		if err != nil {
			return b, err
		}
		if len(b) == cap(b) {
			rest, err := io.ReadAll(io.LimitReader(body, limit+1-int64(len(b))))
			return append(b, rest...), err
		}
	}
}

// ParsePublicURL checks the public base URL a worker is reached at
// (WORKER_PUBLIC_URL): absolute http or https, a host, printable ASCII, no
// user info, query or fragment. Trailing slashes are removed, so
// "https://w.example.com/" and "https://w.example.com" give the same base.
// A path is kept: "https://example.com/worker" is right when a proxy strips
// "/worker" before the request reaches the worker. The same rule as
// jobs.ClientConfig.WorkerPublicURL.
func ParsePublicURL(s string) (string, error) {
	base, err := publicurl.Parse(s)
	if err != nil {
		return "", fmt.Errorf("webhooks: public %w", err)
	}
	return base, nil
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
			return nil, &ConfigError{Field: "secret list", Reason: "is empty or has an empty item"}
		}
		out = append(out, item)
	}
	return out, nil
}

// readSigned reads a webhook's one signature header and its capped raw
// body. Failures are *VerificationError: CheckMissing or CheckMalformed (no
// header, or several), CheckBodyTooLarge (answer 413) and CheckBodyRead.
func readSigned(r *http.Request, header, source string, limit int64) (sig string, body []byte, err error) {
	if sig, err = signatureHeader(r, header, source); err != nil {
		return "", nil, err
	}
	if body, err = readBody(r, source, limit); err != nil {
		return "", nil, err
	}
	return sig, body, nil
}

// signatureHeader is r's one header, CheckMissing or CheckMalformed when
// there is none or several.
func signatureHeader(r *http.Request, header, source string) (string, error) {
	sigs := r.Header.Values(header)
	switch len(sigs) {
	case 0:
		return "", newVerificationError(source, CheckMissing, nil)
	case 1:
		return sigs[0], nil
	default: // which one would the sender have meant? Neither.
		return "", newVerificationError(source, CheckMalformed, nil)
	}
}

// readBody is ReadBody with its failures as *VerificationError:
// CheckBodyTooLarge (answer 413) or CheckBodyRead.
func readBody(r *http.Request, source string, limit int64) ([]byte, error) {
	body, err := ReadBody(r, limit)
	switch {
	case errors.Is(err, ErrBodyTooLarge):
		return nil, newVerificationError(source, CheckBodyTooLarge, nil)
	case err != nil:
		return nil, newVerificationError(source, CheckBodyRead, err)
	}
	return body, nil
}

// refuse answers a failed verification: 413 for a body above the cap, 400
// for an unreadable one, else status; a problem without detail either way.
//
// The connection closes after the answer: the body may be unread (the
// token was refused first, or the body is above the cap), and net/http
// would otherwise read up to 256 KiB of it, at the sender's pace, before
// sending the answer. Real senders are never refused so.
func refuse(c echo.Context, err error, status int) error {
	c.Response().Header().Set(echo.HeaderConnection, "close")
	switch CheckOf(err) {
	case CheckBodyTooLarge:
		status = http.StatusRequestEntityTooLarge
	case CheckBodyRead:
		status = http.StatusBadRequest
	}
	return problem.Respond(c, status, "")
}
