package auth_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jwt"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/digis/jobworker/internal/auth"
	"github.com/digis/jobworker/internal/logtest"
)

var (
	secret = []byte("0123456789abcdef0123456789abcdef") // 32 bytes
	now    = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
)

func fixedNow() time.Time { return now }

// claims builds a claim set relative to now; nil values are left out.
func claims(kv ...any) map[string]any {
	m := map[string]any{"sub": "user-1", "exp": now.Add(time.Hour).Unix(), "iat": now.Unix()}
	for i := 0; i < len(kv); i += 2 {
		if kv[i+1] == nil {
			delete(m, kv[i].(string))
		} else {
			m[kv[i].(string)] = kv[i+1]
		}
	}
	return m
}

// sign signs claims with jwx (an independent path from the hand-made
// tokens below).
func sign(t testing.TB, alg jwa.SignatureAlgorithm, key any, c map[string]any) string {
	t.Helper()
	tok := jwt.New()
	for k, v := range c {
		if n, ok := v.(int64); ok {
			v = time.Unix(n, 0)
		}
		if err := tok.Set(k, v); err != nil {
			t.Fatal(err)
		}
	}
	b, err := jwt.Sign(tok, jwt.WithKey(alg, key))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// handToken builds a compact JWS by hand: any header, an HMAC-SHA256 over
// it with macKey (nil: an empty signature).
func handToken(t *testing.T, header map[string]any, c map[string]any, macKey []byte) string {
	t.Helper()
	enc := base64.RawURLEncoding
	h, _ := json.Marshal(header)
	p, _ := json.Marshal(c)
	input := enc.EncodeToString(h) + "." + enc.EncodeToString(p)
	if macKey == nil {
		return input + "."
	}
	m := hmac.New(sha256.New, macKey)
	m.Write([]byte(input))
	return input + "." + enc.EncodeToString(m.Sum(nil))
}

// serve runs one request through middleware mw and returns the recorder.
func serve(mw echo.MiddlewareFunc, headers ...string) *httptest.ResponseRecorder {
	e := echo.New()
	e.GET("/", func(c echo.Context) error {
		id, ok := auth.UserID(c)
		if !ok {
			id = "anonymous"
		}
		return c.String(http.StatusOK, id)
	}, mw)
	req := httptest.NewRequest(http.MethodGet, "/", nil)
	for _, h := range headers {
		req.Header.Add("Authorization", h)
	}
	rec := httptest.NewRecorder()
	e.ServeHTTP(rec, req)
	return rec
}

func newHS(t *testing.T, mod func(*auth.Config)) *auth.Authenticator {
	t.Helper()
	cfg := auth.Config{HS256Secret: secret, Now: fixedNow}
	if mod != nil {
		mod(&cfg)
	}
	a, err := auth.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Close)
	return a
}

func TestHS256(t *testing.T) {
	t.Parallel()
	valid := sign(t, jwa.HS256, secret, claims())
	other := []byte("another-secret-another-secret-xx")
	tests := []struct {
		name    string
		given   []string // Authorization header values
		expect  int
		user    string
		errAttr bool // WWW-Authenticate carries error="invalid_token"
	}{
		{name: "valid", given: []string{"Bearer " + valid}, expect: 200, user: "user-1"},
		{name: "lower-case scheme (RFC 6750)", given: []string{"bearer " + valid}, expect: 200, user: "user-1"},
		{name: "upper-case scheme", given: []string{"BEARER " + valid}, expect: 200, user: "user-1"},
		{name: "expired", given: []string{"Bearer " + sign(t, jwa.HS256, secret, claims("exp", now.Add(-time.Minute).Unix()))}, expect: 401, errAttr: true},
		{name: "expired within leeway", given: []string{"Bearer " + sign(t, jwa.HS256, secret, claims("exp", now.Add(-2*time.Second).Unix()))}, expect: 200, user: "user-1"},
		{name: "nbf in the future", given: []string{"Bearer " + sign(t, jwa.HS256, secret, claims("nbf", now.Add(time.Minute).Unix()))}, expect: 401, errAttr: true},
		{name: "iat in the future", given: []string{"Bearer " + sign(t, jwa.HS256, secret, claims("iat", now.Add(time.Minute).Unix()))}, expect: 401, errAttr: true},
		{name: "wrong secret", given: []string{"Bearer " + sign(t, jwa.HS256, other, claims())}, expect: 401, errAttr: true},
		{name: "alg none", given: []string{"Bearer " + handToken(t, map[string]any{"alg": "none", "typ": "JWT"}, claims(), nil)}, expect: 401, errAttr: true},
		{name: "HS512 when HS256 is pinned", given: []string{"Bearer " + sign(t, jwa.HS512, secret, claims())}, expect: 401, errAttr: true},
		{name: "header says HS512 over a valid HS256 MAC", given: []string{"Bearer " + handToken(t, map[string]any{"alg": "HS512"}, claims(), secret)}, expect: 401, errAttr: true},
		{name: "hand-made HS256 (cross-check)", given: []string{"Bearer " + handToken(t, map[string]any{"alg": "HS256", "typ": "JWT"}, claims(), secret)}, expect: 200, user: "user-1"},
		{name: "missing sub", given: []string{"Bearer " + sign(t, jwa.HS256, secret, claims("sub", nil))}, expect: 401, errAttr: true},
		{name: "empty sub", given: []string{"Bearer " + handToken(t, map[string]any{"alg": "HS256"}, claims("sub", ""), secret)}, expect: 401, errAttr: true},
		{name: "missing exp", given: []string{"Bearer " + sign(t, jwa.HS256, secret, claims("exp", nil))}, expect: 401, errAttr: true},
		{name: "missing header", given: nil, expect: 401},
		{name: "Bearer alone", given: []string{"Bearer"}, expect: 401, errAttr: true},
		{name: "Bearer and a space", given: []string{"Bearer "}, expect: 401, errAttr: true},
		{name: "Basic credentials", given: []string{"Basic dXNlcjpwYXNz"}, expect: 401, errAttr: true},
		{name: "two Authorization headers", given: []string{"Bearer " + valid, "Bearer " + valid}, expect: 401, errAttr: true},
		{name: "token with a space inside", given: []string{"Bearer " + valid[:10] + " " + valid[10:]}, expect: 401, errAttr: true},
		{name: "garbage token", given: []string{"Bearer abc.def.ghi"}, expect: 401, errAttr: true},
		{name: "JSON serialization", given: []string{`Bearer {"payload":"e30","signatures":[]}`}, expect: 401, errAttr: true},
		{name: "oversized token", given: []string{"Bearer " + strings.Repeat("a", 9000) + ".b.c"}, expect: 401, errAttr: true},
	}
	var logs logtest.Buffer
	a := newHS(t, func(c *auth.Config) {
		c.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			rec := serve(a.Required(), tt.given...)
			if rec.Code != tt.expect {
				t.Fatalf("status = %d, want %d; body %s", rec.Code, tt.expect, rec.Body)
			}
			if tt.expect == 200 {
				if rec.Body.String() != tt.user {
					t.Fatalf("user = %q, want %q", rec.Body, tt.user)
				}
				return
			}
			wantAuth := `Bearer realm="api"`
			if tt.errAttr {
				wantAuth += `, error="invalid_token"`
			}
			if got := rec.Header().Get("WWW-Authenticate"); got != wantAuth {
				t.Errorf("WWW-Authenticate = %q, want %q", got, wantAuth)
			}
			if ct := rec.Header().Get("Content-Type"); ct != "application/problem+json" {
				t.Errorf("Content-Type = %q", ct)
			}
		})
	}
	t.Cleanup(func() {
		if strings.Contains(logs.String(), valid[len(valid)-20:]) || strings.Contains(logs.String(), "eyJ") {
			t.Errorf("a token reached the log:\n%s", logs.String())
		}
	})
}

func TestIssuerAudience(t *testing.T) {
	t.Parallel()
	a := newHS(t, func(c *auth.Config) { c.Issuer, c.Audience = "https://id.example", "jobworker" })
	tests := []struct {
		name   string
		given  map[string]any
		reason string
	}{
		{"both match", claims("iss", "https://id.example", "aud", []string{"jobworker", "other"}), ""},
		{"wrong issuer", claims("iss", "https://evil.example", "aud", "jobworker"), "issuer"},
		{"no issuer", claims("aud", "jobworker"), "issuer"},
		{"wrong audience", claims("iss", "https://id.example", "aud", "other"), "audience"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := a.Verify(t.Context(), sign(t, jwa.HS256, secret, tt.given))
			if auth.Reason(err) != tt.reason || (tt.reason != "") != errors.Is(err, auth.ErrInvalidToken) {
				t.Fatalf("err = %v (reason %q), want reason %q", err, auth.Reason(err), tt.reason)
			}
		})
	}
}

func TestOptional(t *testing.T) {
	t.Parallel()
	a := newHS(t, nil)
	tests := []struct {
		name   string
		given  []string
		expect int
		body   string
	}{
		{"anonymous", nil, 200, "anonymous"},
		{"valid token", []string{"Bearer " + sign(t, jwa.HS256, secret, claims())}, 200, "user-1"},
		{"invalid token is still refused", []string{"Bearer " + sign(t, jwa.HS256, secret, claims("exp", now.Add(-time.Hour).Unix()))}, 401, ""},
		{"other scheme is refused", []string{"Basic dXNlcjpwYXNz"}, 401, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			rec := serve(a.Optional(), tt.given...)
			if rec.Code != tt.expect || (tt.body != "" && rec.Body.String() != tt.body) {
				t.Fatalf("got %d %q, want %d %q", rec.Code, rec.Body, tt.expect, tt.body)
			}
		})
	}
}

func TestBearerConfig(t *testing.T) {
	t.Parallel()
	a := newHS(t, nil)
	if _, err := (auth.BearerConfig{}).ToMiddleware(); err == nil {
		t.Fatal("missing Authenticator accepted")
	}
	if _, err := (auth.BearerConfig{Authenticator: a, Realm: `x"y`}).ToMiddleware(); err == nil {
		t.Fatal("quote in realm accepted")
	}
	mw, err := auth.BearerConfig{Authenticator: a, Skipper: func(echo.Context) bool { return true }}.ToMiddleware()
	if err != nil {
		t.Fatal(err)
	}
	if rec := serve(mw); rec.Code != 200 || rec.Body.String() != "anonymous" {
		t.Fatalf("skipped request = %d %q", rec.Code, rec.Body)
	}
}

func TestRequireUser(t *testing.T) {
	t.Parallel()
	a := newHS(t, nil)
	token := sign(t, jwa.HS256, secret, claims())
	tests := []struct {
		name   string
		owner  string
		header string
		expect int
	}{
		{"owner", "user-1", "Bearer " + token, 200},
		{"another user", "user-2", "Bearer " + token, 403},
		{"anonymous", "user-1", "", 401},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := echo.New()
			e.POST("/", func(c echo.Context) error {
				if err := auth.RequireUser(c, tt.owner); err != nil {
					return err
				}
				return c.NoContent(200)
			}, a.Optional())
			req := httptest.NewRequest(http.MethodPost, "/", nil)
			if tt.header != "" {
				req.Header.Set("Authorization", tt.header)
			}
			rec := httptest.NewRecorder()
			e.ServeHTTP(rec, req)
			if rec.Code != tt.expect {
				t.Fatalf("status = %d, want %d", rec.Code, tt.expect)
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		cfg  auth.Config
	}{
		{"neither", auth.Config{}},
		{"both", auth.Config{HS256Secret: secret, JWKSURL: "https://id.example/jwks"}},
		{"short secret", auth.Config{HS256Secret: []byte("short")}},
		{"plain http to a remote host", auth.Config{JWKSURL: "http://id.example/jwks"}},
		{"relative URL", auth.Config{JWKSURL: "/jwks"}},
		{"huge leeway", auth.Config{HS256Secret: secret, Leeway: time.Hour}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if _, err := auth.New(tt.cfg); !errors.Is(err, auth.ErrInvalidConfig) {
				t.Fatalf("err = %v, want ErrInvalidConfig", err)
			}
		})
	}
}

func TestLoadConfig(t *testing.T) {
	t.Parallel()
	env := func(kv ...string) func(string) string {
		m := map[string]string{}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return func(k string) string { return m[k] }
	}
	if cfg, err := auth.LoadConfig(env("AUTH_JWT_SECRET", string(secret), "AUTH_ISSUER", "iss")); err != nil || cfg.Issuer != "iss" {
		t.Fatalf("valid secret: %+v, %v", cfg.Issuer, err)
	}
	if _, err := auth.LoadConfig(env("AUTH_JWKS_URL", "https://id.example/.well-known/jwks.json")); err != nil {
		t.Fatalf("valid JWKS URL: %v", err)
	}
	for name, getenv := range map[string]func(string) string{
		"none":       env(),
		"short":      env("AUTH_JWT_SECRET", "short"),
		"whitespace": env("AUTH_JWT_SECRET", string(secret)+"\n"),
		"both":       env("AUTH_JWT_SECRET", string(secret), "AUTH_JWKS_URL", "https://id.example/jwks"),
	} {
		_, err := auth.LoadConfig(getenv)
		if !errors.Is(err, auth.ErrInvalidConfig) || strings.Contains(err.Error(), string(secret)) {
			t.Errorf("%s: err = %v", name, err)
		}
	}
}

func TestDevToken(t *testing.T) {
	t.Parallel()
	a := newHS(t, func(c *auth.Config) { c.Now = nil })
	tok, err := auth.DevToken(secret, "demo-fan", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c, err := a.Verify(t.Context(), tok)
	if err != nil || c.Subject != "demo-fan" {
		t.Fatalf("Verify(DevToken) = %+v, %v", c, err)
	}
	if _, err := auth.DevToken([]byte("short"), "u", time.Hour); err == nil {
		t.Fatal("short secret accepted")
	}
	if _, err := auth.DevToken(secret, "", time.Hour); err == nil {
		t.Fatal("empty user accepted")
	}
}

func TestMetrics(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	a := newHS(t, func(c *auth.Config) { c.Registerer = reg })
	serve(a.Required())
	serve(a.Required(), "Bearer "+sign(t, jwa.HS256, secret, claims("exp", now.Add(-time.Hour).Unix())))
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "jobworker_auth_rejections_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			got[m.GetLabel()[0].GetValue()] = m.GetCounter().GetValue()
		}
	}
	if len(got) != 2 || got["missing"] != 1 || got["expired"] != 1 {
		t.Fatalf("rejections = %v, want missing:1 expired:1", got)
	}
}

// jwksServer publishes a JWKS built from public keys and counts fetches.
type jwksServer struct {
	*httptest.Server
	mu    sync.Mutex
	keys  []jwk.Key
	hits  atomic.Int64
	fails atomic.Bool
	// hang, when set, makes each request signal on the channel and then
	// wait until the client gives up.
	hang atomic.Pointer[chan struct{}]
}

func newJWKSServer(t testing.TB, keys ...jwk.Key) *jwksServer {
	s := &jwksServer{keys: keys}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.hits.Add(1)
		if ch := s.hang.Load(); ch != nil {
			select {
			case *ch <- struct{}{}:
			default:
			}
			<-r.Context().Done()
			return
		}
		if s.fails.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		set := jwk.NewSet()
		s.mu.Lock()
		for _, k := range s.keys {
			pub, err := k.PublicKey()
			if err != nil {
				panic(err)
			}
			_ = set.AddKey(pub)
		}
		s.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(set)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *jwksServer) add(k jwk.Key) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.keys = append(s.keys, k)
}

// privateKey makes a jwk private key with a kid (and alg when given).
func privateKey(t testing.TB, raw any, kid string, alg jwa.SignatureAlgorithm) jwk.Key {
	t.Helper()
	k, err := jwk.FromRaw(raw)
	if err != nil {
		t.Fatal(err)
	}
	_ = k.Set(jwk.KeyIDKey, kid)
	if alg != "" {
		_ = k.Set(jwk.AlgorithmKey, alg)
	}
	return k
}

// rsaKeys are generated once: RSA-2048 generation is slow under -race, and
// the keys are only read.
var rsaKeys = sync.OnceValue(func() []*rsa.PrivateKey {
	keys := make([]*rsa.PrivateKey, 4)
	for i := range keys {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(err)
		}
		keys[i] = k
	}
	return keys
})

// jwksBundle is an Authenticator on its own JWKS server and clock.
type jwksBundle struct {
	srv      *jwksServer
	a        *auth.Authenticator
	clock    atomic.Int64 // unix ns
	rsaRaw   *rsa.PrivateKey
	rsaKey   jwk.Key // kid rsa-1, published
	stranger *rsa.PrivateKey
}

func setupJWKS(t *testing.T, mod func(*auth.Config), extra ...jwk.Key) *jwksBundle {
	t.Helper()
	keys := rsaKeys()
	b := &jwksBundle{rsaRaw: keys[0], stranger: keys[1]}
	b.rsaKey = privateKey(t, b.rsaRaw, "rsa-1", jwa.RS256)
	b.srv = newJWKSServer(t, append([]jwk.Key{b.rsaKey}, extra...)...)
	b.clock.Store(now.UnixNano())
	cfg := auth.Config{JWKSURL: b.srv.URL + "/jwks.json", Now: b.now, MinRefetchInterval: time.Minute}
	if mod != nil {
		mod(&cfg)
	}
	a, err := auth.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Close)
	b.a = a
	return b
}

func (b *jwksBundle) now() time.Time          { return time.Unix(0, b.clock.Load()) }
func (b *jwksBundle) advance(d time.Duration) { b.clock.Add(int64(d)) }
func (b *jwksBundle) forged(t *testing.T) jwk.Key {
	return privateKey(t, b.stranger, "forged", jwa.RS256)
}

func TestJWKS(t *testing.T) {
	t.Parallel()
	ecRaw, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ecKey := privateKey(t, ecRaw, "ec-1", "") // no alg: the key type decides
	b := setupJWKS(t, nil, ecKey)
	rsaRaw, rsaKey := b.rsaRaw, b.rsaKey
	stranger := privateKey(t, b.stranger, "rsa-1", jwa.RS256)

	pubDER, _ := x509.MarshalPKIXPublicKey(&rsaRaw.PublicKey)
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})
	pubJWK, _ := json.Marshal(mustPublic(t, rsaKey))

	tests := []struct {
		name   string
		token  string
		reason string // "" = accepted
	}{
		{"RS256", sign(t, jwa.RS256, rsaKey, claims()), ""},
		{"ES256 key without alg", sign(t, jwa.ES256, ecKey, claims()), ""},
		{"RS512 not allowed", sign(t, jwa.RS512, rsaKey, claims()), "algorithm"},
		{"HS256 with the public key PEM as secret", handToken(t, map[string]any{"alg": "HS256", "kid": "rsa-1"}, claims(), pubPEM), "algorithm"},
		{"HS256 with the public JWK as secret", handToken(t, map[string]any{"alg": "HS256", "kid": "rsa-1"}, claims(), pubJWK), "algorithm"},
		{"HS256 with the DER as secret", handToken(t, map[string]any{"alg": "HS256", "kid": "rsa-1"}, claims(), pubDER), "algorithm"},
		{"alg none", handToken(t, map[string]any{"alg": "none", "kid": "rsa-1"}, claims(), nil), "algorithm"},
		{"RS256 header naming the EC key", signWithKid(t, jwa.RS256, rsaRaw, "ec-1"), "algorithm"},
		{"signed by a stranger with a known kid", sign(t, jwa.RS256, stranger, claims()), "bad_signature"},
		{"no kid", signWithKid(t, jwa.RS256, rsaRaw, ""), "no_kid"},
		{"expired", sign(t, jwa.RS256, rsaKey, claims("exp", now.Add(-time.Hour).Unix())), "expired"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, err := b.a.Verify(t.Context(), tt.token)
			if auth.Reason(err) != tt.reason {
				t.Fatalf("err = %v (reason %q), want reason %q", err, auth.Reason(err), tt.reason)
			}
			if tt.reason == "" && c.Subject != "user-1" {
				t.Fatalf("subject = %q", c.Subject)
			}
		})
	}
}

// TestJWKSRotation: an unknown kid refetches the set, at most once per
// MinRefetchInterval.
func TestJWKSRotation(t *testing.T) {
	t.Parallel()
	b := setupJWKS(t, nil)
	// The start-up fetch counts as the last one: let the interval pass.
	b.advance(time.Minute + time.Second)
	before := b.srv.hits.Load()
	rotated := privateKey(t, rsaKeys()[2], "rsa-2", jwa.RS256)
	b.srv.add(rotated)
	if _, err := b.a.Verify(t.Context(), sign(t, jwa.RS256, rotated, claims())); err != nil {
		t.Fatalf("rotated key: %v", err)
	}
	if got := b.srv.hits.Load() - before; got != 1 {
		t.Fatalf("%d fetches for the rotated kid, want 1", got)
	}
	// Forged kids inside the interval cost no fetch.
	for i := range 5 {
		if _, err := b.a.Verify(t.Context(), sign(t, jwa.RS256, b.forged(t), claims())); auth.Reason(err) != "unknown_kid" {
			t.Fatalf("forged kid %d: %v", i, err)
		}
	}
	if got := b.srv.hits.Load() - before; got != 1 {
		t.Fatalf("%d fetches after forged kids, want still 1", got)
	}
	// After the interval one more fetch is allowed.
	b.advance(time.Minute + time.Second)
	if _, err := b.a.Verify(t.Context(), sign(t, jwa.RS256, b.forged(t), claims("exp", now.Add(2*time.Hour).Unix()))); auth.Reason(err) != "unknown_kid" {
		t.Fatalf("forged kid after interval: %v", err)
	}
	if got := b.srv.hits.Load() - before; got != 2 {
		t.Fatalf("%d fetches after the interval, want 2", got)
	}
}

// TestJWKSDown: a JWKS that cannot be fetched during a refetch is a 503,
// not a 401, and known keys keep working from the cache.
func TestJWKSDown(t *testing.T) {
	t.Parallel()
	b := setupJWKS(t, nil)
	b.advance(2 * time.Minute)
	b.srv.fails.Store(true)
	tok := sign(t, jwa.RS256, b.forged(t), claims("exp", now.Add(3*time.Hour).Unix()))
	if _, err := b.a.Verify(t.Context(), tok); !errors.Is(err, auth.ErrKeysUnavailable) {
		t.Fatalf("err = %v, want ErrKeysUnavailable", err)
	}
	b.advance(2 * time.Minute)
	if rec := serve(b.a.Required(), "Bearer "+tok); rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") == "" {
		t.Fatalf("status = %d, Retry-After %q", rec.Code, rec.Header().Get("Retry-After"))
	}
	if _, err := b.a.Verify(t.Context(), sign(t, jwa.RS256, b.rsaKey, claims("exp", now.Add(3*time.Hour).Unix()))); err != nil {
		t.Fatalf("cached key while JWKS is down: %v", err)
	}
}

// roundTripper reports when each JWKS request returns, and with what.
type roundTripper struct{ returned chan error }

func (rt roundTripper) RoundTrip(r *http.Request) (*http.Response, error) {
	res, err := http.DefaultTransport.RoundTrip(r)
	rt.returned <- err
	return res, err
}

// TestClose: Close aborts a JWKS fetch in flight and returns only after
// it has; afterwards the Authenticator never reaches the network, and
// keys already fetched still verify.
func TestClose(t *testing.T) {
	t.Parallel()
	entered := make(chan struct{}, 1)
	rt := roundTripper{returned: make(chan error, 10)}
	b := setupJWKS(t, func(c *auth.Config) { c.HTTPClient = &http.Client{Transport: rt} })
	if err := <-rt.returned; err != nil { // the start-up fetch
		t.Fatal(err)
	}
	// From now on the JWKS server hangs until the client gives up.
	b.srv.hang.Store(&entered)

	b.advance(2 * time.Minute)
	verified := make(chan error, 1)
	go func() {
		_, err := b.a.Verify(context.Background(), sign(t, jwa.RS256, b.forged(t), claims()))
		verified <- err
	}()
	<-entered // a refetch is in flight

	closed := make(chan struct{})
	go func() { b.a.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return while a JWKS fetch hung")
	}
	select {
	case err := <-rt.returned:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("in-flight fetch ended with %v, want context.Canceled", err)
		}
	default:
		t.Fatal("Close returned while the JWKS fetch was still running")
	}
	select {
	case err := <-verified:
		if !errors.Is(err, auth.ErrKeysUnavailable) {
			t.Fatalf("Verify during Close: %v, want ErrKeysUnavailable", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Verify hung after Close")
	}

	// After Close: no fetch, an unknown kid is unavailable at once, a
	// known one still verifies, and Close is idempotent.
	hits := b.srv.hits.Load()
	b.advance(2 * time.Minute)
	if _, err := b.a.Verify(t.Context(), sign(t, jwa.RS256, b.forged(t), claims())); !errors.Is(err, auth.ErrKeysUnavailable) {
		t.Fatalf("unknown kid after Close: %v", err)
	}
	if _, err := b.a.Verify(t.Context(), sign(t, jwa.RS256, b.rsaKey, claims())); err != nil {
		t.Fatalf("known kid after Close: %v", err)
	}
	b.a.Close()
	if got := b.srv.hits.Load(); got != hits {
		t.Fatalf("%d JWKS requests after Close", got-hits)
	}
	select {
	case err := <-rt.returned:
		t.Fatalf("a JWKS request was made after Close (%v)", err)
	default:
	}
}

func TestJWKSUnreachableAtStart(t *testing.T) {
	t.Parallel()
	srv := newJWKSServer(t)
	srv.fails.Store(true)
	_, err := auth.New(auth.Config{JWKSURL: srv.URL, FetchTimeout: 2 * time.Second})
	if !errors.Is(err, auth.ErrKeysUnavailable) {
		t.Fatalf("err = %v, want ErrKeysUnavailable", err)
	}
}

func mustPublic(t *testing.T, k jwk.Key) jwk.Key {
	t.Helper()
	p, err := k.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// signWithKid signs with a raw key and an explicit kid header ("" = none).
func signWithKid(t *testing.T, alg jwa.SignatureAlgorithm, raw any, kid string) string {
	t.Helper()
	k, err := jwk.FromRaw(raw)
	if err != nil {
		t.Fatal(err)
	}
	if kid != "" {
		_ = k.Set(jwk.KeyIDKey, kid)
	}
	return sign(t, alg, k, claims())
}
