package idempotency

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
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
	// ErrNonceReused means the nonce passed WithNonce was already used with
	// another key: a replayed credential. Nothing was claimed.
	ErrNonceReused = errors.New("idempotency: nonce already used for another key")
	// ErrInvalidConfig wraps every *ConfigError.
	ErrInvalidConfig = errors.New("idempotency: invalid config")
)

// ConfigError names the configuration field that is wrong. It matches
// ErrInvalidConfig with errors.Is.
type ConfigError struct {
	// Field is the Go field, e.g. "StoreConfig.LeaseTTL".
	Field string
	// Reason says what is wrong, without the value when it may be secret.
	Reason string
}

func (e *ConfigError) Error() string { return "idempotency: " + e.Field + ": " + e.Reason }

// Is makes errors.Is(err, ErrInvalidConfig) true.
func (e *ConfigError) Is(target error) bool { return target == ErrInvalidConfig }

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
	// LeaseTTL is how long a lease lives without renewal. It is short so a
	// crashed owner frees the key quickly; KeepAlive renews it every
	// LeaseTTL/3 while the owner works. Defaults to 30s.
	LeaseTTL time.Duration
	// ClaimGrace bounds how long a fresh claim outlives its caller's
	// deadline. A new lease is written with an absolute expiry of the
	// caller's deadline plus ClaimGrace, which Redis applies on its own
	// clock: when Redis was stalled and runs the claim only after its caller
	// gave up, the claim expires on arrival and never blocks the caller's
	// retry. The owner's first KeepAlive renewal (due within the grace)
	// extends it to LeaseTTL. It also absorbs clock skew between this host
	// and Redis: a host whose clock is behind Redis's by more than the
	// deadline plus ClaimGrace sees every claim expire on arrival, which
	// Acquire detects and answers with a relative LeaseTTL instead (logged).
	// Defaults to 1s, or LeaseTTL/3 when that is shorter.
	ClaimGrace time.Duration
	// ResultTTL is how long a completed record is kept and replayed. It must
	// outlive the longest client or sender retry window (Stripe events:
	// more than 3 days). Defaults to 24h.
	ResultTTL time.Duration
	// Timeout bounds every Redis call. Defaults to 1s.
	Timeout time.Duration
	// Now is the wall clock claims' absolute expiries are computed from.
	// Defaults to time.Now.
	Now func() time.Time
	// Logger receives what the background cleanup gives up on and clock
	// skew warnings. Defaults to discarding.
	Logger *slog.Logger
	// Registerer receives jobworker_idempotency_cleanups_total{op,result}.
	// Defaults to nil: not registered.
	Registerer prometheus.Registerer
}

// Default values of StoreConfig.
const (
	DefaultLeaseTTL   = 30 * time.Second
	DefaultClaimGrace = time.Second
	DefaultResultTTL  = 24 * time.Hour
	DefaultTimeout    = time.Second
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
	if c.ClaimGrace == 0 {
		c.ClaimGrace = min(DefaultClaimGrace, c.LeaseTTL/3)
	}
	if c.ResultTTL == 0 {
		c.ResultTTL = DefaultResultTTL
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Validate reports a configuration that cannot work as a *ConfigError.
// Zero fields are defaults and valid.
func (c StoreConfig) Validate() error {
	c = c.withDefaults()
	bad := func(field, format string, a ...any) error {
		return &ConfigError{Field: "StoreConfig." + field, Reason: fmt.Sprintf(format, a...)}
	}
	switch {
	case strings.ContainsAny(c.Namespace, "{}"):
		return bad("Namespace", "must not contain braces (they would set the Redis Cluster hash tag)")
	case strings.ContainsAny(c.Prefix, "{}"):
		return bad("Prefix", "must not contain braces (they would set the Redis Cluster hash tag)")
	case c.LeaseTTL < 10*time.Millisecond:
		return bad("LeaseTTL", "%s is below 10ms", c.LeaseTTL)
	case c.ResultTTL < c.LeaseTTL:
		return bad("ResultTTL", "%s is shorter than LeaseTTL %s", c.ResultTTL, c.LeaseTTL)
	case c.Timeout < 0:
		return bad("Timeout", "must not be negative")
	case c.Timeout >= c.LeaseTTL:
		// A renewal that may take a whole lease cannot keep the lease alive.
		return bad("Timeout", "%s must be shorter than LeaseTTL %s", c.Timeout, c.LeaseTTL)
	case c.ClaimGrace < 0:
		return bad("ClaimGrace", "must not be negative")
	}
	return nil
}

// Store is the lease/done core: at most one holder of a key at a time, and a
// completed key answers with its stored result until ResultTTL ends. It is
// safe for concurrent use. The HTTP middleware, the QStash message dedupe and
// the Stripe event dedupe all build on it.
type Store struct {
	cfg     StoreConfig
	batch   *scriptbatch.Batcher
	cleanup *cleanup
	skew    sync.Once // warn once about a clock behind Redis's
	// The TTLs as script arguments, boxed once: an int64 above 255 put in
	// an interface is an allocation, on every claim and done marker.
	leaseMS, resultMS any
}

// NewStore returns a Store on rdb. Call Close when done with it (at
// shutdown, before closing rdb), so cleanups still pending are tried once
// more.
func NewStore(rdb Redis, cfg StoreConfig) (*Store, error) {
	if rdb == nil {
		return nil, &ConfigError{Field: "Redis client", Reason: "is nil"}
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	m, err := newStoreMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	// Concurrent calls share round trips: at most 4 are outstanding, calls
	// arriving meanwhile leave together as one pipeline, each still its own
	// atomic script run. A lone call is never delayed.
	batch := scriptbatch.New(rdb, scriptbatch.Config{MaxInFlight: maxInFlight, Timeout: cfg.Timeout})
	s := &Store{cfg: cfg, batch: batch, leaseMS: cfg.LeaseTTL.Milliseconds(), resultMS: cfg.ResultTTL.Milliseconds()}
	s.cleanup = newCleanup(s, m)
	return s, nil
}

// Config returns the store's configuration with defaults filled in.
func (s *Store) Config() StoreConfig { return s.cfg }

// Close waits for the done records of CompleteAsync still on their way,
// tries the pending cleanups (releases and completions that failed because
// Redis did not answer) once more within ctx, then stops the background
// cleanup. The store stays usable; calls after Close schedule no more
// background work. Close returns the number of cleanups given up.
func (s *Store) Close(ctx context.Context) int {
	unsent := s.batch.Flush(ctx)
	return unsent + s.cleanup.close(ctx)
}

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

// AcquireOption adds a condition to one Acquire.
type AcquireOption func(*acquireSettings)

type acquireSettings struct {
	nonce    string
	nonceTTL time.Duration
}

// WithNonce makes Acquire accept nonce (e.g. a signed token's jti) for this
// key only: the first Acquire records it for ttl (the token's remaining
// lifetime plus the verifier's skew), in the same round trip; a later
// Acquire with the same nonce and another key fails with ErrNonceReused and
// claims nothing, while the same nonce with the same key (the same request
// sent twice) is answered as usual. The key must carry a Redis Cluster hash
// tag ("{job}:msg_1"): the nonce is stored under the same tag so one script
// can check both on Redis Cluster, which also scopes nonces to the tag.
func WithNonce(nonce string, ttl time.Duration) AcquireOption {
	return func(s *acquireSettings) { s.nonce, s.nonceTTL = nonce, ttl }
}

// Acquire claims key in one round trip. fingerprint identifies the request
// that uses the key ("" disables the check); a different non-empty
// fingerprint on an existing record returns ErrFingerprintMismatch together
// with the Result describing that record. A Redis failure returns
// ErrUnavailable: nothing may run.
//
// A caller that gives up on Acquire (its deadline passed) never blocks its
// own retry: the claim carries an absolute expiry at the deadline plus
// ClaimGrace, so a claim Redis runs late expires on arrival; the store also
// remembers the claim's owner token and releases it in the background once
// Redis answers, and a later Acquire of the same key through this store
// takes such an abandoned claim over.
func (s *Store) Acquire(ctx context.Context, key, fingerprint string, opts ...AcquireOption) (Result, error) {
	if key == "" {
		return Result{}, errors.New("idempotency: empty key")
	}
	var o acquireSettings
	for _, opt := range opts {
		opt(&o)
	}
	rkey := s.redisKey(key)
	keys := []string{rkey}
	nonceTTL, nonceValue := int64(0), ""
	if o.nonce != "" {
		tag, ok := hashTag(key)
		if !ok {
			return Result{}, fmt.Errorf("idempotency: WithNonce needs a key with a hash tag, got %q", key)
		}
		if o.nonceTTL < time.Millisecond {
			return Result{}, errors.New("idempotency: WithNonce needs a TTL of at least 1ms")
		}
		keys = append(keys, s.cfg.Prefix+"idem:"+s.cfg.Namespace+":{"+tag+"}:nonce:"+o.nonce)
		nonceTTL, nonceValue = o.nonceTTL.Milliseconds(), keyDigest(rkey)
	}
	token, err := newToken()
	if err != nil {
		return Result{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	deadline, _ := ctx.Deadline()
	claimUntil := s.cfg.Now().Add(time.Until(deadline) + s.cfg.ClaimGrace)
	takeover := s.cleanup.abandonedToken(rkey)

	res, code, err := s.acquire(ctx, keys, token, fingerprint, claimUntil.UnixMilli(), takeover, nonceTTL, nonceValue)
	if err == nil && code == codeExpiredOnArrival {
		// The reply came before our deadline, yet Redis found the deadline
		// passed: this host's clock is behind Redis's. Claim with a relative
		// expiry instead; the stalled-Redis protection is lost until the
		// clocks agree again, which is worth a warning.
		s.skew.Do(func() {
			s.cfg.Logger.Warn("idempotency: this host's clock is behind Redis's by more than the claim grace; claims fall back to relative expiry",
				"namespace", s.cfg.Namespace, "claim_grace", s.cfg.ClaimGrace)
		})
		claimUntil = time.Time{}
		res, code, err = s.acquire(ctx, keys, token, fingerprint, 0, takeover, nonceTTL, nonceValue)
	}
	if errors.Is(err, ErrUnavailable) {
		// The claim may have reached Redis, or may run once a stalled Redis
		// resumes: release it as soon as Redis answers.
		s.cleanup.add(cleanupTask{op: opRelease, key: rkey, token: token, until: claimUntil})
	}
	if err != nil {
		return res, err // a mismatch comes with the record it found
	}
	if code == codeAcquired {
		if takeover != "" {
			s.cleanup.forget(rkey, takeover)
		}
		valid := claimUntil
		if valid.IsZero() {
			valid = time.Now().Add(s.cfg.LeaseTTL)
		} else {
			// The same instant on the monotonic clock KeepAlive measures with.
			valid = time.Now().Add(claimUntil.Sub(s.cfg.Now()))
		}
		res.Lease = &Lease{store: s, key: rkey, token: token, fingerprint: fingerprint, validUntil: valid}
	}
	return res, nil
}

// Reply codes of acquireScript.
const (
	codeAcquired         = 1
	codeInProgress       = 2
	codeDone             = 3
	codeExpiredOnArrival = 4
	codeNonceReused      = 5
)

func (s *Store) acquire(ctx context.Context, keys []string, token, fingerprint string, claimUntil int64, takeover string, nonceTTL int64, nonceValue string) (Result, int64, error) {
	raw, err := s.batch.Run(ctx, acquireScript, keys,
		token, fingerprint, s.leaseMS, claimUntil, takeover, nonceTTL, nonceValue).Slice()
	if err != nil {
		return Result{}, 0, unavailable(err)
	}
	code, _ := raw[0].(int64)
	switch code {
	case codeAcquired, codeExpiredOnArrival:
		return Result{Outcome: Acquired}, code, nil
	case codeInProgress:
		res := Result{Outcome: InProgress, TTL: pttl(raw[2])}
		return res, code, mismatch(fingerprint, raw[1])
	case codeDone:
		v, _ := raw[2].(string)
		res := Result{Outcome: Done, Value: []byte(v), TTL: pttl(raw[3])}
		return res, code, mismatch(fingerprint, raw[1])
	case codeNonceReused:
		return Result{}, code, ErrNonceReused
	}
	return Result{}, code, fmt.Errorf("idempotency: unexpected acquire reply %v", raw)
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

// hashTag returns what Redis Cluster hashes in key: the text between the
// first '{' and the next '}', when not empty.
func hashTag(key string) (string, bool) {
	i := strings.IndexByte(key, '{')
	if i < 0 {
		return "", false
	}
	j := strings.IndexByte(key[i+1:], '}')
	if j <= 0 {
		return "", false
	}
	return key[i+1 : i+1+j], true
}

// keyDigest is what a nonce records of the key it was used with: enough to
// tell keys apart, far shorter than the key (nonces are many and short-lived).
func keyDigest(rkey string) string {
	sum := sha256.Sum256([]byte(rkey))
	return base64.RawURLEncoding.EncodeToString(sum[:12])
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
