package cache

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

func TestKeys(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		prefix     string
		hash       bool
		key        string
		wantValue  string
		wantLock   string
		wantErrKey bool
	}{
		{name: "plain key is wrapped in a hash tag", key: "status:42",
			wantValue: "cache:{status:42}", wantLock: "lock:cache:{status:42}"},
		{name: "key with its own tag is kept", key: "status:{42}",
			wantValue: "cache:status:{42}", wantLock: "lock:cache:status:{42}"},
		{name: "prefix", prefix: "app1:", key: "status:42",
			wantValue: "app1:cache:{status:42}", wantLock: "app1:lock:cache:{status:42}"},
		{name: "prefix with a tag pins the slot", prefix: "{app}:", key: "status:42",
			wantValue: "{app}:cache:status:42", wantLock: "{app}:lock:cache:status:42"},
		{name: "empty braces do not count as a tag", key: "a{}b",
			wantValue: "cache:{a{}b}", wantLock: "lock:cache:{a{}b}"},
		{name: "hashed", hash: true, key: "status:alice",
			wantValue: "cache:{h:", wantLock: "lock:cache:{h:"},
		{name: "empty key", key: "", wantErrKey: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := newKeyer(tt.prefix, tt.hash).keys(tt.key)
			if tt.wantErrKey {
				if !errors.Is(err, ErrInvalidKey) {
					t.Fatalf("err = %v, want ErrInvalidKey", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tt.hash {
				if !strings.HasPrefix(got.value, tt.wantValue) || !strings.HasPrefix(got.lock, tt.wantLock) ||
					strings.Contains(got.value, "alice") {
					t.Fatalf("hashed keys = %+v", got)
				}
			} else if got.value != tt.wantValue || got.lock != tt.wantLock {
				t.Fatalf("keys = %+v, want %s / %s", got, tt.wantValue, tt.wantLock)
			}
			if slotTag(got.value) != slotTag(got.lock) {
				t.Fatalf("different slots: %+v", got)
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		cfg     Config
		wantErr bool
	}{
		{name: "zero value", cfg: Config{}},
		{name: "negative", cfg: Config{WaitBudget: -1}, wantErr: true},
		{name: "tiny lock", cfg: Config{LockTTL: time.Millisecond}, wantErr: true},
		{name: "poll bounds", cfg: Config{PollMin: time.Second, PollMax: time.Millisecond}, wantErr: true},
		{name: "unbalanced prefix", cfg: Config{Prefix: "a{"}, wantErr: true},
		{name: "tagged prefix", cfg: Config{Prefix: "{a}:"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := tt.cfg.Validate()
			if tt.wantErr != (err != nil) || (err != nil && !errors.Is(err, ErrInvalidConfig)) {
				t.Fatalf("Validate() = %v, wantErr %v", err, tt.wantErr)
			}
		})
	}
	if _, err := New(nil, Config{}); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("New(nil) = %v", err)
	}
}

func TestEnvelope(t *testing.T) {
	t.Parallel()
	b := encodeEnvelope(1_800_000_000_123, 1_800_000_009_999, []byte(`{"a":1}`))
	e, err := decodeEnvelope(b)
	if err != nil || e.soft != 1_800_000_000_123 || e.serveUntil != 1_800_000_009_999 || string(e.payload) != `{"a":1}` {
		t.Fatalf("round trip: %+v %v", e, err)
	}
	for _, bad := range []string{"", "x", `{"a":1}`, "c123"} {
		if _, err := decodeEnvelope([]byte(bad)); err == nil {
			t.Errorf("decodeEnvelope(%q) accepted", bad)
		}
	}
}

func TestGetOrComputeTTL(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		ttl  time.Duration
		opts []Option
		// wantPX bounds the key's expiry right after the store.
		wantPX time.Duration
	}{
		{name: "sub-second ttl is honoured", ttl: 150 * time.Millisecond, wantPX: 150 * time.Millisecond},
		{name: "sub-millisecond rounds up to 1ms", ttl: 300 * time.Microsecond, wantPX: time.Millisecond},
		{name: "seconds", ttl: 10 * time.Second, wantPX: 10 * time.Second},
		{name: "hard ttl includes the stale window", ttl: 200 * time.Millisecond,
			opts: []Option{WithStaleWhileRevalidate(300 * time.Millisecond)}, wantPX: 500 * time.Millisecond},
		{name: "stale-if-error lengthens it further", ttl: 200 * time.Millisecond,
			opts:   []Option{WithStaleWhileRevalidate(100 * time.Millisecond), WithStaleIfError(time.Second)},
			wantPX: 1200 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, Config{})
			ctx := context.Background()
			var calls atomic.Int32
			compute := func(context.Context) (string, error) {
				return fmt.Sprintf("v%d", calls.Add(1)), nil
			}
			var o Outcome
			v, err := GetOrCompute(ctx, b.c, "k", tt.ttl, compute, append(tt.opts, WithOutcome(&o))...)
			if err != nil || v != "v1" || o != OutcomeMissComputed {
				t.Fatalf("first call = %q, %v, %s", v, err, o)
			}
			pttl, err := b.rdb.PTTL(ctx, "cache:{k}").Result()
			// A 1ms key may be gone (-2ns) by the time PTTL runs; "no TTL"
			// (-1ns) is always a failure.
			short := tt.wantPX <= time.Millisecond
			if err != nil || pttl == -1 || pttl > tt.wantPX || (!short && pttl <= 0) {
				t.Fatalf("PTTL = %v (%v), want in (0, %v]", pttl, err, tt.wantPX)
			}
			if n := b.rdb.Exists(ctx, "lock:cache:{k}").Val(); n != 0 {
				t.Fatalf("lock left behind")
			}
			if tt.wantPX > time.Second {
				v, err = GetOrCompute(ctx, b.c, "k", tt.ttl, compute, append(tt.opts, WithOutcome(&o))...)
				if err != nil || v != "v1" || o != OutcomeHit {
					t.Fatalf("second call = %q, %v, %s", v, err, o)
				}
				return
			}
			// Short TTLs: the key really expires, and the next call recomputes.
			waitExpired(t, b.rdb, "cache:{k}")
			v, err = GetOrCompute(ctx, b.c, "k", tt.ttl, compute, tt.opts...)
			if err != nil || v != "v2" {
				t.Fatalf("after expiry = %q, %v", v, err)
			}
			assertAllKeysHaveTTL(t, b.rdb)
		})
	}
}

// TestStampedeInstances runs 1002 callers of one cold key over three
// instances (three clients) in this process: exactly one computation. The
// multi-process version is TestStampedeProcesses.
func TestStampedeInstances(t *testing.T) {
	t.Parallel()
	// A generous RedisTimeout: on two cores shared with the other -race
	// tests, 100ms pool waits happen, and would (correctly) fail open.
	cfg := Config{RedisTimeout: 2 * time.Second}
	b := setup(t, cfg)
	c2, reg2 := b.instance(t, cfg)
	c3, reg3 := b.instance(t, cfg)
	const callers = 1002
	// The computation holds until every caller has called in: all of them
	// arrive while the key is cold.
	var calls, arrived atomic.Int32
	allIn := make(chan struct{})
	compute := func(ctx context.Context) (int, error) {
		n := calls.Add(1)
		select {
		case <-allIn:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
		return int(n), nil
	}
	start := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, callers)
	for i := 0; i < callers; i++ {
		c := []*Cache{b.c, c2, c3}[i%3]
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			if arrived.Add(1) == callers {
				close(allIn)
			}
			v, err := GetOrCompute(context.Background(), c, "hot", 5*time.Second, compute)
			if err != nil || v != 1 {
				errs <- fmt.Errorf("got %d, %v", v, err)
			}
		}()
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := calls.Load(); n != 1 {
		t.Fatalf("%d computations, want 1", n)
	}
	total := map[Outcome]int{}
	for _, reg := range []*prometheus.Registry{b.reg, reg2, reg3} {
		for o, n := range outcomes(t, reg) {
			total[o] += n
		}
	}
	if total[OutcomeMissComputed] != 1 || total[OutcomeWaitedHit]+total[OutcomeHit] != 1001 {
		t.Fatalf("outcomes: %v", total)
	}
	t.Logf("outcomes: %v", total)
}
