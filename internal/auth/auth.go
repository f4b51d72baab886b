package auth

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jws"
	"github.com/lestrrat-go/jwx/v2/jwt"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/digis/jobworker/internal/validtext"
)

// Errors. Verify wraps ErrInvalidToken with the reason (for logs); callers
// answer every one of them with the same terse 401.
var (
	// ErrInvalidConfig: Config.Validate failed.
	ErrInvalidConfig = errors.New("auth: invalid config")
	// ErrInvalidToken: the token is malformed, badly signed, expired, not
	// yet valid, for another issuer or audience, or lacks sub/exp.
	ErrInvalidToken = errors.New("auth: invalid token")
	// ErrKeysUnavailable: the JWKS could not be fetched.
	ErrKeysUnavailable = errors.New("auth: signing keys unavailable")
)

// MinSecretLen is the shortest HS256 secret accepted (RFC 7518 §3.2: a key
// at least as long as the hash output).
const MinSecretLen = 32

// maxTokenLen bounds the work an anonymous caller can cause.
const maxTokenLen = 8 << 10

// maxSubjectLen matches the store's limit on user ids.
const maxSubjectLen = 255

// maxJWKSBytes bounds a JWKS response; real key sets are a few KiB.
const maxJWKSBytes = 1 << 20

// jwksAlgorithms are the only algorithms accepted from a JWKS. HS256 is
// absent on purpose: a public key must never be usable as an HMAC secret
// (algorithm confusion), and "none" is never accepted anywhere.
var jwksAlgorithms = map[jwa.SignatureAlgorithm]jwa.KeyType{
	jwa.RS256: jwa.RSA,
	jwa.ES256: jwa.EC,
}

// Config says how tokens are verified. Set exactly one of HS256Secret and
// JWKSURL.
type Config struct {
	// HS256Secret verifies HS256 tokens (AUTH_JWT_SECRET); at least
	// MinSecretLen bytes. Only HS256 is accepted then: a token whose header
	// names another algorithm is refused even if its MAC would verify.
	HS256Secret []byte
	// JWKSURL is where the identity provider publishes its public keys
	// (AUTH_JWKS_URL); https, or http to a loopback host for development.
	// Tokens must be RS256 or ES256 and carry a kid found in the set; the
	// key's own alg, when present, must match the header.
	JWKSURL string
	// Issuer, when set, must equal the iss claim (AUTH_ISSUER). Defaults to
	// not checked.
	Issuer string
	// Audience, when set, must be in the aud claim (AUTH_AUDIENCE).
	// Defaults to not checked.
	Audience string
	// Leeway tolerates clock skew on exp, nbf and iat. Defaults to 5s;
	// at most 5m.
	Leeway time.Duration
	// Now is the clock. Defaults to time.Now.
	Now func() time.Time
	// HTTPClient fetches the JWKS. Defaults to a client with FetchTimeout;
	// a client without a Timeout gets a copy with FetchTimeout set.
	HTTPClient *http.Client
	// FetchTimeout bounds one JWKS fetch. Defaults to 5s.
	FetchTimeout time.Duration
	// RefreshInterval is how often the JWKS is refetched in the background
	// (jwk.Cache). Defaults to 15m.
	RefreshInterval time.Duration
	// MinRefetchInterval bounds refetches caused by an unknown kid (a key
	// rotation, or a forged kid): at most one per interval. Defaults to 30s.
	MinRefetchInterval time.Duration
	// Logger gets a debug line per rejected token (reason only, never the
	// token). Defaults to discarding.
	Logger *slog.Logger
	// Registerer receives jobworker_auth_rejections_total{reason}. Nil
	// means: do not register anywhere.
	Registerer prometheus.Registerer
	// LimitForgery, when set, is called by the middleware for every token
	// that could be a forgery or a guess (malformed, badly signed, of another
	// algorithm, an unknown kid: see Forgery) before it answers 401; a
	// non-nil error is answered instead (a 429 once the client's address has
	// used its quota of failures). Tokens that are well signed but expired,
	// early or for another issuer or audience are not counted: they are a
	// real user's stale token, and a NAT full of them must keep getting
	// 401. Valid tokens never call it. Defaults to none.
	LimitForgery func(c echo.Context) error
}

// Validate reports a bad configuration without echoing secrets.
// ConfigError is what Validate reports. It matches ErrInvalidConfig.
type ConfigError struct{ Reason string }

func (e *ConfigError) Error() string { return ErrInvalidConfig.Error() + ": " + e.Reason }

// Is makes errors.Is(err, ErrInvalidConfig) true.
func (e *ConfigError) Is(target error) bool { return target == ErrInvalidConfig }

func (c Config) Validate() error {
	hasSecret, hasJWKS := len(c.HS256Secret) > 0, c.JWKSURL != ""
	switch {
	case hasSecret == hasJWKS:
		return &ConfigError{Reason: "set exactly one of an HS256 secret (AUTH_JWT_SECRET) and a JWKS URL (AUTH_JWKS_URL)"}
	case hasSecret && len(c.HS256Secret) < MinSecretLen:
		return &ConfigError{Reason: fmt.Sprintf("the HS256 secret must be at least %d bytes", MinSecretLen)}
	case c.Leeway < 0 || c.Leeway > 5*time.Minute:
		return &ConfigError{Reason: "leeway must be between 0 and 5m"}
	case c.FetchTimeout < 0 || c.RefreshInterval < 0 || c.MinRefetchInterval < 0:
		return &ConfigError{Reason: "negative JWKS interval"}
	}
	if hasJWKS {
		u, err := url.Parse(c.JWKSURL)
		if err != nil || u.Host == "" {
			return &ConfigError{Reason: "the JWKS URL is not an absolute URL"}
		}
		if u.Scheme != "https" && !(u.Scheme == "http" && isLoopback(u.Hostname())) {
			return &ConfigError{Reason: "the JWKS URL must be https (http only to a loopback host)"}
		}
	}
	return nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Claims is what a verified token says about its bearer.
type Claims struct {
	// Subject is the user id (sub): the rate-limit identity and the owner
	// the routes compare with.
	Subject   string
	ExpiresAt time.Time
}

// Authenticator verifies bearer tokens. It is safe for concurrent use.
// With a JWKS it owns background work; stop it with Close.
type Authenticator struct {
	secret   []byte
	jwksURL  string
	cache    *jwk.Cache
	fetcher  *fetchClient       // the only way the cache reaches the network
	life     context.Context    // done once Close has begun
	cancel   context.CancelFunc // ends life
	parse    []jwt.ParseOption  // validation options shared by both modes
	now      func() time.Time
	minFetch time.Duration
	log      *slog.Logger
	rejected *prometheus.CounterVec
	limit    func(c echo.Context) error

	mu          sync.Mutex
	lastRefetch time.Time
}

// New builds an Authenticator. With a JWKS URL it fetches the key set once
// (bounded by FetchTimeout) and fails if that fetch fails, so a wrong URL
// stops start-up instead of rejecting every request later; afterwards the
// set is refreshed in the background until Close. Call Close when done
// (it is a no-op for an HS256 secret).
func New(cfg Config) (*Authenticator, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Leeway == 0 {
		cfg.Leeway = 5 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.FetchTimeout == 0 {
		cfg.FetchTimeout = 5 * time.Second
	}
	if cfg.RefreshInterval == 0 {
		cfg.RefreshInterval = 15 * time.Minute
	}
	if cfg.MinRefetchInterval == 0 {
		cfg.MinRefetchInterval = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	a := &Authenticator{
		secret:   append([]byte(nil), cfg.HS256Secret...),
		jwksURL:  cfg.JWKSURL,
		now:      cfg.Now,
		minFetch: cfg.MinRefetchInterval,
		log:      cfg.Logger,
		limit:    cfg.LimitForgery,
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "jobworker_auth_rejections_total",
			Help: "Bearer tokens refused, by reason.",
		}, []string{"reason"}),
	}
	if cfg.Registerer != nil {
		if err := cfg.Registerer.Register(a.rejected); err != nil {
			return nil, fmt.Errorf("auth: register metrics: %w", err)
		}
	}
	a.parse = []jwt.ParseOption{
		jwt.WithValidate(true),
		jwt.WithClock(jwt.ClockFunc(cfg.Now)),
		jwt.WithAcceptableSkew(cfg.Leeway),
		jwt.WithRequiredClaim(jwt.SubjectKey),
		jwt.WithRequiredClaim(jwt.ExpirationKey),
	}
	if cfg.Issuer != "" {
		a.parse = append(a.parse, jwt.WithIssuer(cfg.Issuer))
	}
	if cfg.Audience != "" {
		a.parse = append(a.parse, jwt.WithAudience(cfg.Audience))
	}
	if cfg.JWKSURL == "" {
		return a, nil
	}

	client := cfg.HTTPClient
	if client == nil {
		client = &http.Client{Timeout: cfg.FetchTimeout}
	} else if client.Timeout == 0 {
		c := *client
		c.Timeout = cfg.FetchTimeout
		client = &c
	}
	a.life, a.cancel = context.WithCancel(context.Background())
	a.fetcher = &fetchClient{life: a.life, client: client}
	a.cache = jwk.NewCache(a.life)
	if err := a.cache.Register(cfg.JWKSURL, jwk.WithHTTPClient(a.fetcher), jwk.WithRefreshInterval(cfg.RefreshInterval)); err != nil {
		a.Close()
		return nil, fmt.Errorf("auth: register JWKS: %w", err)
	}
	fetchCtx, fetchCancel := context.WithTimeout(a.life, cfg.FetchTimeout)
	defer fetchCancel()
	if _, err := a.cache.Refresh(fetchCtx, cfg.JWKSURL); err != nil {
		a.Close()
		return nil, fmt.Errorf("%w: first fetch of %s: %v", ErrKeysUnavailable, cfg.JWKSURL, err)
	}
	a.lastRefetch = cfg.Now()
	return a, nil
}

// Close stops the JWKS refresher: it cancels a fetch in flight, waits for
// it to return, and makes every later fetch fail at once, so nothing of
// the Authenticator touches the network after Close returns. Verify keeps
// working with the keys already fetched; a token whose kid needs a refetch
// gets ErrKeysUnavailable. Close is idempotent, safe to call concurrently,
// and a no-op with an HS256 secret.
func (a *Authenticator) Close() {
	if a.cancel == nil {
		return
	}
	a.cancel()
	a.fetcher.close()
}

// fetchClient is the JWKS cache's HTTP client, bound to the
// Authenticator's lifetime. jwx's cache calls Get without a context, from
// goroutines Close cannot join; here every fetch carries the lifetime
// context (so Close aborts it), reads the whole bounded body before
// returning (so no I/O is left to the cache), and is counted (so Close can
// wait for it).
type fetchClient struct {
	life   context.Context
	client *http.Client

	mu       sync.Mutex // orders inflight.Add before close's Wait
	closed   bool
	inflight sync.WaitGroup
}

// errClosed is what a fetch after Close returns.
var errClosed = errors.New("auth: authenticator closed")

// Get fetches u, implementing jwk.HTTPClient.
func (c *fetchClient) Get(u string) (*http.Response, error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, errClosed
	}
	c.inflight.Add(1)
	c.mu.Unlock()
	defer c.inflight.Done()
	req, err := http.NewRequestWithContext(c.life, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	res, err := c.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	body, err := io.ReadAll(io.LimitReader(res.Body, maxJWKSBytes+1))
	if err != nil {
		return nil, fmt.Errorf("reading the JWKS: %w", err)
	}
	if len(body) > maxJWKSBytes {
		return nil, fmt.Errorf("the JWKS is larger than %d bytes", maxJWKSBytes)
	}
	res.Body = io.NopCloser(bytes.NewReader(body))
	return res, nil
}

// close refuses new fetches and waits for those in flight; the caller has
// cancelled life, so they return promptly.
func (c *fetchClient) close() {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.inflight.Wait()
}

// rejection is an ErrInvalidToken with a metric/log reason.
type rejection struct {
	reason string
	err    error
}

func (r *rejection) Error() string { return "auth: invalid token: " + r.reason }
func (r *rejection) Unwrap() []error {
	if r.err != nil {
		return []error{ErrInvalidToken, r.err}
	}
	return []error{ErrInvalidToken}
}

// Reason returns the short reason an error from Verify carries ("expired",
// "bad_signature", ...), or "" for other errors. Use it in logs and metrics,
// never in responses.
func Reason(err error) string {
	var r *rejection
	if errors.As(err, &r) {
		return r.reason
	}
	return ""
}

func reject(reason string, err error) error { return &rejection{reason: reason, err: err} }

// forgeryReasons are the rejections no honest client produces: the token
// does not parse, or its signature cannot be checked or does not verify.
var forgeryReasons = map[string]bool{"malformed": true, "algorithm": true, "no_kid": true, "unknown_kid": true, "bad_signature": true}

// Forgery reports whether err from Verify (or a malformed header) is a
// token that may be a forgery or a guess, rather than a real token past
// its time or for another audience.
func Forgery(err error) bool { return forgeryReasons[Reason(err)] }

// Verify checks a compact JWS token and returns its claims. Errors wrap
// ErrInvalidToken (or ErrKeysUnavailable when the JWKS cannot be fetched).
func (a *Authenticator) Verify(ctx context.Context, token string) (Claims, error) {
	if token == "" || len(token) > maxTokenLen || strings.Count(token, ".") != 2 {
		return Claims{}, reject("malformed", nil)
	}
	msg, err := jws.ParseString(token)
	if err != nil || len(msg.Signatures()) != 1 {
		return Claims{}, reject("malformed", err)
	}
	hdr := msg.Signatures()[0].ProtectedHeaders()
	alg := hdr.Algorithm()

	var keyOpt jwt.ParseOption
	if a.jwksURL == "" {
		// Pin the algorithm ourselves: jwx verifies with the algorithm we
		// pass, whatever the header says.
		if alg != jwa.HS256 {
			return Claims{}, reject("algorithm", nil)
		}
		keyOpt = jwt.WithKey(jwa.HS256, a.secret)
	} else {
		kty, ok := jwksAlgorithms[alg]
		if !ok {
			return Claims{}, reject("algorithm", nil)
		}
		kid := hdr.KeyID()
		if kid == "" {
			return Claims{}, reject("no_kid", nil)
		}
		key, err := a.key(ctx, kid)
		if err != nil {
			return Claims{}, err
		}
		if key.KeyType() != kty {
			return Claims{}, reject("algorithm", nil)
		}
		if ka := key.Algorithm(); ka != nil && ka.String() != "" && ka.String() != alg.String() {
			return Claims{}, reject("algorithm", nil)
		}
		if u := key.KeyUsage(); u != "" && u != string(jwk.ForSignature) {
			return Claims{}, reject("algorithm", nil)
		}
		keyOpt = jwt.WithKey(alg, key)
	}

	opts := append([]jwt.ParseOption{keyOpt}, a.parse...)
	tok, err := jwt.ParseString(token, opts...)
	if err != nil {
		return Claims{}, classify(err)
	}
	sub := tok.Subject()
	if sub == "" || len(sub) > maxSubjectLen {
		return Claims{}, reject("bad_subject", nil)
	}
	// A signed token whose sub is not text (a NUL, invalid UTF-8) is the
	// issuer's mistake, not a forgery: it matches validtext.ErrInvalid too,
	// so the middleware answers 400 and says why.
	if err := validtext.Line("the token's sub claim", sub); err != nil {
		return Claims{}, reject("bad_subject", err)
	}
	return Claims{Subject: sub, ExpiresAt: tok.Expiration()}, nil
}

func classify(err error) error {
	switch {
	case errors.Is(err, jwt.ErrTokenExpired()):
		return reject("expired", err)
	case errors.Is(err, jwt.ErrTokenNotYetValid()), errors.Is(err, jwt.ErrInvalidIssuedAt()):
		return reject("not_yet_valid", err)
	case errors.Is(err, jwt.ErrInvalidIssuer()):
		return reject("issuer", err)
	case errors.Is(err, jwt.ErrInvalidAudience()):
		return reject("audience", err)
	case errors.Is(err, jwt.ErrRequiredClaim()):
		return reject("missing_claim", err)
	case errors.Is(err, jwt.ErrInvalidJWT()):
		return reject("bad_signature", err)
	}
	var ve jwt.ValidationError
	if errors.As(err, &ve) {
		return reject("bad_claims", err)
	}
	return reject("bad_signature", err)
}

// key finds the JWKS key with this kid. An unknown kid may mean the
// provider rotated keys: the set is refetched, at most once per
// MinRefetchInterval, so forged kids cannot turn into a flood of fetches.
func (a *Authenticator) key(ctx context.Context, kid string) (jwk.Key, error) {
	set, err := a.cache.Get(ctx, a.jwksURL)
	if err == nil {
		if k, ok := set.LookupKeyID(kid); ok {
			return k, nil
		}
	}
	if a.life.Err() != nil {
		// Closed: the set is final; a fetch could only fail.
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrKeysUnavailable, err)
		}
		return nil, fmt.Errorf("%w: %v", ErrKeysUnavailable, errClosed)
	}
	a.mu.Lock()
	now := a.now()
	if now.Sub(a.lastRefetch) < a.minFetch {
		a.mu.Unlock()
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrKeysUnavailable, err)
		}
		return nil, reject("unknown_kid", nil)
	}
	a.lastRefetch = now
	a.mu.Unlock()
	// The refetch ends with the caller's context or with Close, whichever
	// comes first: after Close the cache's workers are gone, and a fetch
	// would wait for them forever.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(a.life, cancel)()
	set, err = a.cache.Refresh(ctx, a.jwksURL)
	if err != nil {
		a.log.Warn("JWKS refetch failed", "error", err.Error())
		return nil, fmt.Errorf("%w: %v", ErrKeysUnavailable, err)
	}
	if k, ok := set.LookupKeyID(kid); ok {
		return k, nil
	}
	return nil, reject("unknown_kid", nil)
}
