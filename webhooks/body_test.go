package webhooks_test

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/digis/jobworker/webhooks"
)

// ReadBody returns exactly the bytes sent, whatever the declared length
// says and however the body arrives, and refuses anything past the limit.
func TestReadBody(t *testing.T) {
	const limit = 16
	body := func(n int) string { return strings.Repeat("x", n) }
	readers := map[string]func(string) io.Reader{
		"whole":      func(s string) io.Reader { return strings.NewReader(s) },
		"one byte":   func(s string) io.Reader { return iotest.OneByteReader(strings.NewReader(s)) },
		"data + EOF": func(s string) io.Reader { return iotest.DataErrReader(strings.NewReader(s)) },
	}
	for _, tc := range []struct {
		name     string
		sent     int
		declared int64 // -1: unknown (chunked)
		tooLarge bool
	}{
		{"declared, short", 7, 7, false},
		{"declared, at the limit", limit, limit, false},
		{"declared, empty", 0, 0, false},
		{"unknown, short", 7, -1, false},
		{"unknown, at the limit", limit, -1, false},
		{"unknown, past the limit", limit + 1, -1, true},
		{"longer than declared, within the limit", 12, 5, false},
		{"longer than declared, past the limit", limit + 5, 5, true},
		{"shorter than declared", 3, 9, false},
		{"declared past the limit", 3, limit + 1, true},
	} {
		for rname, reader := range readers {
			t.Run(tc.name+"/"+rname, func(t *testing.T) {
				req, err := http.NewRequest(http.MethodPost, "/", io.NopCloser(reader(body(tc.sent))))
				if err != nil {
					t.Fatal(err)
				}
				req.ContentLength = tc.declared
				got, err := webhooks.ReadBody(req, limit)
				if tc.tooLarge {
					if !errors.Is(err, webhooks.ErrBodyTooLarge) {
						t.Fatalf("ReadBody = %q, %v; want ErrBodyTooLarge", got, err)
					}
					return
				}
				if err != nil || string(got) != body(tc.sent) {
					t.Fatalf("ReadBody = %q, %v; want %q", got, err, body(tc.sent))
				}
				again, err := io.ReadAll(req.Body)
				if err != nil || !bytes.Equal(again, got) || req.ContentLength != int64(tc.sent) {
					t.Fatalf("body put back as %q (%v), ContentLength %d", again, err, req.ContentLength)
				}
			})
		}
	}
}

// A read error is returned as it is, not taken for the end of the body.
func TestReadBodyReadError(t *testing.T) {
	boom := errors.New("connection reset")
	req, err := http.NewRequest(http.MethodPost, "/", io.NopCloser(io.MultiReader(strings.NewReader("par"), iotest.ErrReader(boom))))
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = 8
	if _, err := webhooks.ReadBody(req, 16); !errors.Is(err, boom) {
		t.Fatalf("ReadBody error = %v, want %v", err, boom)
	}
}
