package apiapp_test

import (
	"net/http"
	"testing"
)

// BenchmarkStatus measures GET /api/streams/status answered from the cache
// (one Redis GET, rate-limit decision, per-viewer part) anonymous and with a bearer token, against GET /healthz
// through the same server and loopback client, the baseline.
//
//	go test -run '^$' -bench . -benchtime 2000x -count 3 ./internal/apiapp
func BenchmarkStatus(b *testing.B) {
	bn := setup(b, map[string]string{"RATE_LIMIT_OVERRIDES": "streams:status=100000000/1m"})
	tok := token(b, bn.fan)
	if a, _ := bn.status(b, bn.api(), bn.username, tok); a.status != http.StatusOK {
		b.Fatalf("warm-up: %d", a.status)
	}
	b.Run("healthz", func(b *testing.B) {
		for b.Loop() {
			if a := req(b, http.MethodGet, bn.api()+"/healthz", ""); a.status != http.StatusOK {
				b.Fatal(a.status)
			}
		}
	})
	b.Run("status-cached-anonymous", func(b *testing.B) {
		for b.Loop() {
			if a, _ := bn.status(b, bn.api(), bn.username, ""); a.status != http.StatusOK {
				b.Fatal(a.status)
			}
		}
	})
	b.Run("status-cached", func(b *testing.B) {
		for b.Loop() {
			if a, _ := bn.status(b, bn.api(), bn.username, tok); a.status != http.StatusOK {
				b.Fatal(a.status)
			}
		}
	})
}
