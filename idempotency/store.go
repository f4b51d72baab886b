package idempotency

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/digis/jobworker/internal/scriptbatch"
)

// Sentinel errors. Test them with errors.Is.
var (
	// ErrUnavailable means Redis could not be reached or did not answer in
	// time. Nothing was claimed or changed as far as the caller can tell:
	// refuse the request (503, Retry-After) rather than run it unguarded.
	ErrUnavailable = errors.New("idempotency: store unavailable")
	// ErrFingerprintMismatch means the key is already in use by a request
	// with a different fingerprint (IETF draft: 422).
	ErrFingerprintMismatch = errors.New("idempotency: key reused with a different request")
	// ErrLeaseLost means the caller no longer owns the lease: it expired and
	// another caller claimed the key, or the record was finished or deleted.
	ErrLeaseLost = errors.New("idempotency: lease lost")
)

// Redis is the subset of go-redis the store needs. Every go-redis client
// (*redis.Client, *redis.ClusterClient, *redis.Ring, redis.UniversalClient)
// satisfies it.
type Redis interface {
	redis.Scripter
}

// StoreConfig configures a Store. The zero value plus defaults is usable.
type StoreConfig struct {
	// Prefix is the deployment's global key prefix, prepended to every key.
	// Defaults to "".
	Prefix string
	// Namespace separates users of one Redis, e.g. "http", "qstash",
	// "stripe". Keys are Prefix + "idem:" + Namespace + ":" + key.
	// Defaults to "default".
	Namespace string
	// LeaseTTL is how long a claim lives without renewal. It is short so a
	// crashed owner frees the key quickly; KeepAlive renews it every
	// LeaseTTL/3 while the owner works. Defaults to 30s.
	LeaseTTL time.Duration
	// ResultTTL is how long a completed record is kept and replayed. It must
	// outlive the longest client or sender retry window (Stripe events:
	// more than 3 days). Defaults to 24h.
	ResultTTL time.Duration
	// Timeout bounds every Redis call. Defaults to 1s.
	Timeout time.Duration
}

// Default values of StoreConfig.
const (
	DefaultLeaseTTL  = 30 * time.Second
	DefaultResultTTL = 24 * time.Hour
	DefaultTimeout   = time.Second
)

// maxInFlight bounds a Store's outstanding round trips (see NewStore).
const maxInFlight = 4

func (c StoreConfig) withDefaults() StoreConfig {
	if c.Namespace == "" {
		c.Namespace = "default"
	}
	if c.LeaseTTL == 0 {
		c.LeaseTTL = DefaultLeaseTTL
	}
	if c.ResultTTL == 0 {
		c.ResultTTL = DefaultResultTTL
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	return c
}

// Validate reports a configuration that cannot work. Zero fields are
// defaults and valid.
func (c StoreConfig) Validate() error {
	c = c.withDefaults()
	switch {
	case c.LeaseTTL < 10*time.Millisecond:
		return fmt.Errorf("idempotency: LeaseTTL %s is below 10ms", c.LeaseTTL)
	case c.ResultTTL < c.LeaseTTL:
		return fmt.Errorf("idempotency: ResultTTL %s is shorter than LeaseTTL %s", c.ResultTTL, c.LeaseTTL)
	case c.Timeout < 0:
		return fmt.Errorf("idempotency: negative Timeout %s", c.Timeout)
	case c.Timeout >= c.LeaseTTL:
		// A renewal that may take a whole lease cannot keep the lease alive.
		return fmt.Errorf("idempotency: Timeout %s must be shorter than LeaseTTL %s", c.Timeout, c.LeaseTTL)
	}
	return nil
}

// Store is the lease/done core: at most one holder of a key at a time, and a
// completed key answers with its stored result until ResultTTL ends. It is
// safe for concurrent use. The HTTP middleware, the QStash message dedupe and
// the Stripe event dedupe all build on it.
type Store struct {
	cfg   StoreConfig
	batch *scriptbatch.Batcher
}

// NewStore returns a Store on rdb.
func NewStore(rdb Redis, cfg StoreConfig) (*Store, error) {
	if rdb == nil {
		return nil, errors.New("idempotency: nil Redis client")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	// Concurrent calls share round trips: at most 4 are outstanding, calls
	// arriving meanwhile leave together as one pipeline, each still its own
	// atomic script run. A lone call is never delayed.
	batch := scriptbatch.New(rdb, scriptbatch.Config{MaxInFlight: maxInFlight, Timeout: cfg.Timeout})
	return &Store{cfg: cfg, batch: batch}, nil
}

// Config returns the store's configuration with defaults filled in.
func (s *Store) Config() StoreConfig { return s.cfg }

// Outcome is what Acquire found.
type Outcome int

const (
	// Acquired: the caller holds the lease and must run the work, then call
	// Complete or Release (and KeepAlive while it runs).
	Acquired Outcome = iota + 1
	// InProgress: another caller holds a live lease. Answer "try later"
	// (409 or 5xx with Retry-After) and do not run the work.
	InProgress
	// Done: the work already completed; Result.Value is what was stored.
	Done
)

func (o Outcome) String() string {
	switch o {
	case Acquired:
		return "acquired"
	case InProgress:
		return "in_progress"
	case Done:
		return "done"
	}
	return fmt.Sprintf("Outcome(%d)", int(o))
}

// Result is the answer of Acquire.
type Result struct {
	Outcome Outcome
	// Lease is set when Outcome is Acquired.
	Lease *Lease
	// Value is the stored result when Outcome is Done (may be empty).
	Value []byte
	// TTL is the time left on the other holder's lease (InProgress) or on
	// the stored result (Done). Use it for Retry-After.
	TTL time.Duration
}

// Acquire claims key in one round trip. fingerprint identifies the request
// that uses the key ("" disables the check); a different non-empty
// fingerprint on an existing record returns ErrFingerprintMismatch together
// with the Result describing that record. A Redis failure returns
// ErrUnavailable: nothing may run.
func (s *Store) Acquire(ctx context.Context, key, fingerprint string) (Result, error) {
	if key == "" {
		return Result{}, errors.New("idempotency: empty key")
	}
	token, err := newToken()
	if err != nil {
		return Result{}, err
	}
	rkey := s.redisKey(key)
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	raw, err := s.batch.Run(ctx, acquireScript, []string{rkey}, token, fingerprint, s.cfg.LeaseTTL.Milliseconds()).Slice()
	if err != nil {
		return Result{}, unavailable(err)
	}
	switch code, _ := raw[0].(int64); code {
	case 1:
		return Result{Outcome: Acquired, Lease: &Lease{store: s, key: rkey, token: token, fingerprint: fingerprint}}, nil
	case 2:
		res := Result{Outcome: InProgress, TTL: pttl(raw[2])}
		return res, mismatch(fingerprint, raw[1])
	case 3:
		v, _ := raw[2].(string)
		res := Result{Outcome: Done, Value: []byte(v), TTL: pttl(raw[3])}
		return res, mismatch(fingerprint, raw[1])
	}
	return Result{}, fmt.Errorf("idempotency: unexpected acquire reply %v", raw)
}

func (s *Store) redisKey(key string) string {
	return s.cfg.Prefix + "idem:" + s.cfg.Namespace + ":" + key
}

func (s *Store) call(ctx context.Context, script *redis.Script, key string, args ...any) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	n, err := s.batch.Run(ctx, script, []string{key}, args...).Int64()
	if err != nil {
		return 0, unavailable(err)
	}
	return n, nil
}

func mismatch(want string, got any) error {
	stored, _ := got.(string)
	if want != "" && stored != "" && want != stored {
		return ErrFingerprintMismatch
	}
	return nil
}

func pttl(v any) time.Duration {
	ms, _ := v.(int64)
	if ms < 0 {
		return 0
	}
	return time.Duration(ms) * time.Millisecond
}

func unavailable(err error) error { return fmt.Errorf("%w: %w", ErrUnavailable, err) }

func newToken() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("idempotency: owner token: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}
