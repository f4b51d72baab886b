package idempotency

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/digis/jobworker/internal/redistest"
)

// The acquire script's nonce check answers the same through SET NX GET
// (Redis ≥ 7.0) and through its GET-then-SET fallback (older servers, which
// refuse NX with GET). The fallback is forced here by an option no Redis
// knows, on the suite's real redis-server.
func TestAcquireNonceFallback(t *testing.T) {
	t.Parallel()
	fallback := strings.Replace(acquireSource, "'PX', ARGV[6], 'GET')", "'PX', ARGV[6], 'NOSUCHOPTION')", 1)
	if fallback == acquireSource {
		t.Fatal("the nonce SET of the acquire script moved; update this test")
	}
	rdb := redistest.Start(t).Client(t)
	ctx := context.Background()
	if err := rdb.Do(ctx, "SET", "probe", "v", "NX", "PX", 1000, "NOSUCHOPTION").Err(); err == nil {
		t.Fatal("redis-server took an unknown SET option: the fallback would not run")
	}
	far := time.Now().Add(time.Hour).UnixMilli()
	for name, script := range map[string]*redis.Script{"SET NX GET": acquireScript, "GET then SET": redis.NewScript(fallback)} {
		t.Run(name, func(t *testing.T) {
			n := "{" + name + "}:nonce"
			acquire := func(owner, key, digest string) string {
				t.Helper()
				v, err := script.Run(ctx, rdb, []string{"{" + name + "}:" + key, n}, owner, "fp", 30000, far, "", 60000, digest).Slice()
				if err != nil {
					t.Fatalf("acquire %s: %v", key, err)
				}
				return fmt.Sprint(v[0])
			}
			steps := []struct{ owner, key, digest, want string }{
				{"a", "msg_1", "d1", "1"}, // fresh nonce: claimed, nonce recorded
				{"b", "msg_1", "d1", "2"}, // the same request again: in progress
				{"c", "msg_2", "d2", "5"}, // the nonce with another key: refused
			}
			for _, s := range steps {
				if got := acquire(s.owner, s.key, s.digest); got != s.want {
					t.Fatalf("acquire %s with %s = %s, want %s", s.key, s.digest, got, s.want)
				}
			}
			if rdb.Exists(ctx, "{"+name+"}:msg_2").Val() != 0 {
				t.Fatal("the refused nonce left a record behind")
			}
			if got := rdb.Get(ctx, n).Val(); got != "d1" {
				t.Fatalf("nonce holds %q, want the first key's digest", got)
			}
			if ttl := rdb.PTTL(ctx, n).Val(); ttl <= 0 || ttl > time.Minute {
				t.Fatalf("nonce PTTL = %s, want (0, 1m]", ttl)
			}
		})
	}
}
