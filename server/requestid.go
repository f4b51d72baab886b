package server

import (
	"crypto/rand"
	"encoding/hex"
	"sync/atomic"

	"github.com/labstack/echo/v4"
)

// requestID takes a caller's X-Request-Id when it is short and plain (so it
// cannot forge log lines) and makes one otherwise; it is echoed back and
// available through RequestIDOf. The answer's header is where it is kept:
// Echo's context store would cost a map per request.
func requestID() echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			id := c.Request().Header.Get(echo.HeaderXRequestID)
			if !plainID(id) {
				id = newRequestID()
			}
			c.Response().Header()[echo.HeaderXRequestID] = []string{id}
			return next(c)
		}
	}
}

// Generated ids are a per-process random prefix and a counter: unique
// across replicas and restarts (48 random bits per process) and without a
// crypto/rand call per request. A request id is for correlating log lines,
// not a secret, so being guessable within one process is fine.
var (
	requestIDPrefix  = newRequestIDPrefix()
	requestIDCounter atomic.Uint64
)

func newRequestIDPrefix() [12]byte {
	var b [6]byte
	_, _ = rand.Read(b[:])
	var out [12]byte
	hex.Encode(out[:], b[:])
	return out
}

// newRequestID returns 24 hex digits: the process prefix and the low 48
// bits of the counter.
func newRequestID() string {
	const digits = "0123456789abcdef"
	var b [24]byte
	copy(b[:12], requestIDPrefix[:])
	n := requestIDCounter.Add(1)
	for i := 23; i >= 12; i-- {
		b[i] = digits[n&0xf]
		n >>= 4
	}
	return string(b[:])
}

// RequestIDOf returns the request id set by the server's middleware: the
// X-Request-Id of the answer.
func RequestIDOf(c echo.Context) string {
	if v := c.Response().Header()[echo.HeaderXRequestID]; len(v) > 0 {
		return v[0]
	}
	return ""
}

func plainID(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		ch := s[i]
		if !(ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9' || ch == '-' || ch == '_' || ch == '.') {
			return false
		}
	}
	return true
}
