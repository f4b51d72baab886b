package apiapp_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/digis/jobworker/internal/metrictest"
	"github.com/digis/jobworker/internal/outage"
	"github.com/digis/jobworker/internal/testwait"

	"github.com/digis/jobworker/cache"
	"github.com/digis/jobworker/internal/apiapp"
	"github.com/digis/jobworker/internal/appjobs"
	"github.com/digis/jobworker/internal/auth"
	"github.com/digis/jobworker/internal/env"
	"github.com/digis/jobworker/internal/pgtest"
	"github.com/digis/jobworker/internal/process"
	"github.com/digis/jobworker/internal/redistest"
	"github.com/digis/jobworker/internal/store"
	"github.com/digis/jobworker/internal/workerapp"
	"github.com/digis/jobworker/jobs"
	"github.com/digis/jobworker/qstashdev"
	"github.com/digis/jobworker/qstashdev/qstashdevtest"
)

const testSecret = "test-secret-for-hs256-at-least-32-bytes-long"

// bundle is one private stack: redis-server, PostgreSQL database, qstashdev
// (behind a front that can go down), an in-process worker with the reference
// jobs, and one or more API instances built with the production wiring.
type bundle struct {
	redis  *redistest.Server
	qstash *qstashdevtest.Server
	front  *outage.Front // QStash as the API and the worker reach it
	store  store.Store
	pool   *pgxpool.Pool // nil with the in-memory store
	worker string        // worker base URL
	apis   []string      // API base URLs
	env    map[string]string

	creator, fan string // user ids
	username     string
	stream       store.Stream
}

func (b *bundle) api() string { return b.apis[0] }

func randHex(n int) string {
	buf := make([]byte, n)
	_, _ = rand.Read(buf)
	return hex.EncodeToString(buf)
}

func envMap(m map[string]string) env.Getenv { return func(k string) string { return m[k] } }

// serve runs p on a fresh loopback listener until the test ends.
func serve(t testing.TB, ln net.Listener, p *process.Process) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Server.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
}

func listen(t testing.TB) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// setup starts the stack on PostgreSQL with env overriding the API's
// variables, and seeds a creator with a live stream and a fan holding 1000
// tokens. The fan's id looks like an e-mail address on purpose: the PII scan
// proves it never reaches Redis even when a deployment's user ids are
// personal.
func setup(t testing.TB, env map[string]string) *bundle {
	t.Helper()
	pool := pgtest.New(t)
	st, err := store.NewPostgres(pool, store.Options{MaxTipAmount: 500})
	if err != nil {
		t.Fatal(err)
	}
	b := setupWith(t, st, env)
	b.pool = pool
	return b
}

// setupMemory is setup on the in-memory store of the local stack.
func setupMemory(t testing.TB, env map[string]string) *bundle {
	t.Helper()
	st, err := store.NewMemory(store.Options{MaxTipAmount: 500})
	if err != nil {
		t.Fatal(err)
	}
	return setupWith(t, st, env)
}

func setupWith(t testing.TB, st store.Store, env map[string]string) *bundle {
	t.Helper()
	b := &bundle{
		redis:    redistest.Start(t),
		qstash:   qstashdevtest.Start(t, qstashdev.Config{TimeScale: 0.001}),
		store:    st,
		creator:  "creator-" + randHex(6),
		fan:      "fan." + randHex(4) + "@example.com",
		username: "chan_" + randHex(4),
	}
	b.front = outage.Start(t, b.qstash.Handler())

	wln := listen(t)
	b.worker = "http://" + wln.Addr().String()
	wcfg, err := workerapp.LoadConfig(envMap(map[string]string{
		"METRICS_TOKEN": metrictest.Token, "REDIS_URL": b.redis.URL(), "REDIS_TIMEOUT": "300ms", "WORKER_PUBLIC_URL": b.worker,
		"QSTASH_CURRENT_SIGNING_KEY": qstashdev.DevCurrentSigningKey,
		"QSTASH_NEXT_SIGNING_KEY":    qstashdev.DevNextSigningKey,
		"QSTASH_URL":                 b.front.URL, "QSTASH_TOKEN": qstashdev.DevToken, "JOBWORKER_ENV": "development",
		"STRIPE_WEBHOOK_SECRET": "whsec_test", "LOG_LEVEL": logLevel(),
		"DATABASE_URL": "memory", // the test passes its store in directly
	}))
	if err != nil {
		t.Fatal(err)
	}
	wp, err := workerapp.Build(wcfg, workerapp.Deps{Store: st, Register: func(reg *jobs.Registry, p *process.Process) error {
		c, err := cache.New(p.Redis, cache.Config{Logger: p.Log})
		if err != nil {
			return err
		}
		return appjobs.Register(reg, appjobs.Deps{Log: p.Log, Store: st, Cache: c})
	}})
	if err != nil {
		t.Fatal(err)
	}
	serve(t, wln, wp)

	b.env = map[string]string{
		// The strict tier fails closed on a missed deadline: give it the same
		// room as REDIS_TIMEOUT on two busy cores under -race.
		"METRICS_TOKEN": metrictest.Token, "REDIS_URL": b.redis.URL(), "REDIS_TIMEOUT": "300ms", "RATE_LIMIT_REDIS_TIMEOUT": "300ms",
		"QSTASH_URL": b.front.URL, "QSTASH_TOKEN": qstashdev.DevToken, "JOBWORKER_ENV": "development", "WORKER_PUBLIC_URL": b.worker,
		"AUTH_JWT_SECRET": testSecret, "RATE_LIMIT_IP_SOURCE": "direct",
		"RATE_LIMIT_OVERRIDES": "tips:quick=1000/1m", "TIP_MAX_AMOUNT": "500",
		"LOG_LEVEL": logLevel(), "DATABASE_URL": "memory", // the store is passed in directly
	}
	for k, v := range env {
		b.env[k] = v
	}
	b.addAPI(t)

	ctx := context.Background()
	if b.stream, err = st.StartStream(ctx, store.StartStreamRequest{CreatorID: b.creator, Username: b.username, Title: "Live now"}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Credit(ctx, b.fan, 1000, "seed:"+b.fan); err != nil {
		t.Fatal(err)
	}
	return b
}

// addAPI starts one more API instance on the same Redis, database and
// QStash: what a second replica behind the load balancer is.
func (b *bundle) addAPI(t testing.TB) string {
	t.Helper()
	cfg, err := apiapp.LoadConfig(envMap(b.env))
	if err != nil {
		t.Fatal(err)
	}
	p, err := apiapp.Build(cfg, apiapp.Deps{Store: b.store})
	if err != nil {
		t.Fatal(err)
	}
	ln := listen(t)
	serve(t, ln, p)
	url := "http://" + ln.Addr().String()
	b.apis = append(b.apis, url)
	return url
}

func logLevel() string {
	if l := os.Getenv("TEST_LOG_LEVEL"); l != "" {
		return l
	}
	return "error"
}

func token(t testing.TB, user string) string {
	t.Helper()
	tok, err := auth.DevToken([]byte(testSecret), user, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

type answer struct {
	status int
	header http.Header
	body   string
}

// req is one HTTP call. hdr are header pairs; a "Authorization" value
// without a space is sent as a bearer token.
func req(t testing.TB, method, url, body string, hdr ...string) answer {
	t.Helper()
	r, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		r.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		if hdr[i+1] == "" {
			continue
		}
		r.Header.Set(hdr[i], hdr[i+1])
	}
	res, err := http.DefaultClient.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	out, _ := io.ReadAll(res.Body)
	return answer{res.StatusCode, res.Header, string(out)}
}

func bearer(tok string) string {
	if tok == "" {
		return ""
	}
	return "Bearer " + tok
}

func (b *bundle) status(t testing.TB, base, username, tok string) (answer, apiapp.StatusResponse) {
	t.Helper()
	a := req(t, http.MethodGet, base+apiapp.StatusRoute+"?username="+username, "", "Authorization", bearer(tok))
	var s apiapp.StatusResponse
	if a.status == http.StatusOK {
		if err := json.Unmarshal([]byte(a.body), &s); err != nil {
			t.Fatalf("status body %q: %v", a.body, err)
		}
	}
	return a, s
}

func (b *bundle) tip(t testing.TB, base, tok, key, body string) answer {
	t.Helper()
	return req(t, http.MethodPost, base+apiapp.QuickTipRoute, body, "Authorization", bearer(tok), "Idempotency-Key", key)
}

func tipBody(streamID, amount int64) string {
	return `{"amount":` + strconv.FormatInt(amount, 10) + `,"streamId":` + strconv.FormatInt(streamID, 10) + `}`
}

func (b *bundle) balance(t *testing.T, user string) int64 {
	t.Helper()
	n, err := b.store.Balance(context.Background(), user)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// metric reads one sample from a /metrics page, 0 when absent.
func metric(t *testing.T, base, series string) float64 {
	t.Helper()
	return metrictest.Scrape(t, base, series)
}

// waitJob waits until the worker ran a job of kind n times.
func (b *bundle) waitJob(t *testing.T, kind string, n float64) {
	t.Helper()
	series := `jobworker_deliveries_total{job="` + kind + `",outcome="done"}`
	testwait.For(t, 10*time.Second, fmt.Sprintf("%s reaching %v", series, n), func() bool { return metric(t, b.worker, series) >= n })
}

func wantProblem(t *testing.T, a answer, status int, what string) {
	t.Helper()
	if a.status != status {
		t.Fatalf("%s: status %d, want %d: %s", what, a.status, status, a.body)
	}
	if status >= 400 && !strings.HasPrefix(a.header.Get("Content-Type"), "application/problem+json") {
		t.Fatalf("%s: content type %q, want problem+json", what, a.header.Get("Content-Type"))
	}
}

func TestStreamStatus(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	fan, creator := token(t, b.fan), token(t, b.creator)

	a, s := b.status(t, b.api(), b.username, "")
	wantProblem(t, a, 200, "anonymous")
	if !s.Live || s.Title != "Live now" || s.StreamID != b.stream.ID || s.StartedAt == nil || s.Viewer != (apiapp.ViewerAccess{}) {
		t.Fatalf("anonymous status %+v", s)
	}
	if a.header.Get("Vary") != "Cookie, Authorization" || !strings.Contains(a.header.Get("Cache-Control"), "private") {
		t.Fatalf("caching headers %v", a.header)
	}
	if a.header.Get("X-RateLimit-Limit") != "120" {
		t.Fatalf("generous tier expected, got limit %q", a.header.Get("X-RateLimit-Limit"))
	}
	// The public part now comes from the cache, the viewer part per request.
	a, s = b.status(t, b.api(), strings.ToUpper(b.username), fan)
	if a.status != 200 || a.header.Get("X-Cache") != string(cache.OutcomeHit) ||
		s.Viewer != (apiapp.ViewerAccess{Authenticated: true, CanTip: true}) {
		t.Fatalf("fan: %d %q %+v", a.status, a.header.Get("X-Cache"), s.Viewer)
	}
	_, s = b.status(t, b.api(), b.username, creator)
	if s.Viewer != (apiapp.ViewerAccess{Authenticated: true, IsCreator: true}) {
		t.Fatalf("creator: %+v", s.Viewer)
	}

	for _, tt := range []struct {
		name, username, auth string
		want                 int
	}{
		{"unknown username", "nobody_here", "", 404},
		{"unknown again (cached as not found)", "nobody_here", "", 404},
		{"missing username", "", "", 400},
		{"bad username", "a!", "", 400},
		{"invalid token", b.username, "Bearer not.a.jwt", 401},
		{"token with another secret", b.username, "Bearer " + mustDevToken(t, strings.Repeat("x", 40), b.fan), 401},
	} {
		a := req(t, http.MethodGet, b.api()+apiapp.StatusRoute+"?username="+tt.username, "", "Authorization", tt.auth)
		wantProblem(t, a, tt.want, tt.name)
	}
}

func mustDevToken(t *testing.T, secret, user string) string {
	t.Helper()
	tok, err := auth.DevToken([]byte(secret), user, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// Start and stop update PostgreSQL, delete the status key at once and run
// the follow-up job; a second API instance sees the change on its next read.
func TestStartStopVisibleOnEveryInstance(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	second := b.addAPI(t)
	creator := token(t, b.creator)

	// Both instances have read (and cached) the live status.
	for _, base := range b.apis {
		if _, s := b.status(t, base, b.username, ""); !s.Live {
			t.Fatal("not live before stop")
		}
	}
	a := req(t, http.MethodPost, b.api()+apiapp.StopRoute, `{"streamId":`+strconv.FormatInt(b.stream.ID, 10)+`}`, "Authorization", bearer(creator))
	wantProblem(t, a, 200, "stop")
	if a2, s := b.status(t, second, b.username, ""); s.Live || a2.header.Get("X-Cache") != string(cache.OutcomeMissComputed) {
		t.Fatalf("second instance after stop: live=%v cache=%q", s.Live, a2.header.Get("X-Cache"))
	}
	b.waitJob(t, "streams.notify-followers", 1)

	a = req(t, http.MethodPost, second+apiapp.StartRoute, `{"username":"`+b.username+`","title":"Back again"}`, "Authorization", bearer(creator))
	wantProblem(t, a, 200, "start")
	if _, s := b.status(t, b.api(), b.username, ""); !s.Live || s.Title != "Back again" {
		t.Fatalf("first instance after start: %+v", s)
	}
	b.waitJob(t, "streams.notify-followers", 2)
	// A retried start of the same broadcast is harmless and, being
	// deduplicated, does not notify twice.
	a = req(t, http.MethodPost, second+apiapp.StartRoute, `{"username":"`+b.username+`","title":"Back again"}`, "Authorization", bearer(creator))
	wantProblem(t, a, 200, "start again")

	// A brand-new channel: its cached "not found" is replaced at once.
	newName := "new_" + randHex(3)
	wantProblem(t, req(t, http.MethodGet, second+apiapp.StatusRoute+"?username="+newName, ""), 404, "before first start")
	wantProblem(t, req(t, http.MethodPost, b.api()+apiapp.StartRoute, `{"username":"`+newName+`","title":"First"}`, "Authorization", bearer(creator)), 200, "first start")
	if _, s := b.status(t, second, newName, ""); !s.Live {
		t.Fatal("new channel not live on the second instance")
	}

	fan := token(t, b.fan)
	for _, tt := range []struct {
		name, route, body, auth string
		want                    int
	}{
		{"start without token", apiapp.StartRoute, `{"username":"x_y_z","title":"t"}`, "", 401},
		{"stop without token", apiapp.StopRoute, `{"streamId":1}`, "", 401},
		{"start with a bad token", apiapp.StartRoute, `{"username":"x_y_z","title":"t"}`, "Bearer abc.def.ghi", 401},
		{"start someone else's channel", apiapp.StartRoute, `{"username":"` + b.username + `","title":"mine"}`, bearer(fan), 403},
		{"stop someone else's stream", apiapp.StopRoute, `{"streamId":` + strconv.FormatInt(b.stream.ID, 10) + `}`, bearer(fan), 403},
		{"stop unknown stream", apiapp.StopRoute, `{"streamId":999999}`, bearer(creator), 404},
		{"stop bad id", apiapp.StopRoute, `{"streamId":0}`, bearer(creator), 400},
		{"start bad username", apiapp.StartRoute, `{"username":"A B","title":"t"}`, bearer(creator), 400},
		{"start bad JSON", apiapp.StartRoute, `{"username":`, bearer(creator), 400},
		{"start unknown field", apiapp.StartRoute, `{"user":"abc"}`, bearer(creator), 400},
		{"start oversized", apiapp.StartRoute, `{"username":"abc","title":"` + strings.Repeat("x", 64<<10) + `"}`, bearer(creator), 413},
	} {
		wantProblem(t, req(t, http.MethodPost, b.api()+tt.route, tt.body, "Authorization", tt.auth), tt.want, tt.name)
	}
	if _, s := b.status(t, b.api(), b.username, ""); !s.Live || s.Title != "Back again" {
		t.Fatalf("refused requests changed the stream: %+v", s)
	}
}

func TestQuickTip(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	fan, creator := token(t, b.fan), token(t, b.creator)
	ctx := context.Background()
	ended, err := b.store.StartStream(ctx, store.StartStreamRequest{CreatorID: b.creator, Username: "off_" + randHex(3), Title: "over"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.store.StopStream(ctx, b.creator, ended.ID); err != nil {
		t.Fatal(err)
	}
	id := b.stream.ID

	a := b.tip(t, b.api(), fan, "k-happy", tipBody(id, 100))
	wantProblem(t, a, 201, "happy path")
	var tip apiapp.TipResponse
	if err := json.Unmarshal([]byte(a.body), &tip); err != nil || tip.Amount != 100 || tip.CreatorID != b.creator || tip.StreamID != id {
		t.Fatalf("tip %+v (%v)", tip, err)
	}
	if strings.Contains(a.body, b.fan) {
		t.Fatal("the answer carries the tipper's id")
	}
	if b.balance(t, b.fan) != 900 || b.balance(t, b.creator) != 100 {
		t.Fatalf("balances fan=%d creator=%d", b.balance(t, b.fan), b.balance(t, b.creator))
	}
	// The same key again replays without moving money.
	r := b.tip(t, b.api(), fan, "k-happy", tipBody(id, 100))
	if r.status != 201 || r.body != a.body || r.header.Get("Idempotent-Replayed") != "true" || b.balance(t, b.fan) != 900 {
		t.Fatalf("replay %d %q %v", r.status, r.body, r.header)
	}
	// Side effects ran in the worker: the creator was notified and the
	// 30-day count is cached for 300 s.
	b.waitJob(t, "tips.notify-creator", 1)
	b.waitJob(t, "tips.refresh-count", 1)
	rdb := b.redis.Client(t)
	key := "cache:" + appjobs.TipCountCacheKey(b.creator)
	if ttl := rdb.PTTL(ctx, key).Val(); ttl <= 290*time.Second || ttl > 300*time.Second {
		t.Fatalf("%s TTL %v", key, ttl)
	}
	if v := rdb.Get(ctx, key).Val(); !strings.Contains(v, `"count":1`) || !strings.Contains(v, `"sum":100`) {
		t.Fatalf("cached count %q", v)
	}

	long := strings.Repeat("k", 256)
	for _, tt := range []struct {
		name, auth, key, body string
		want                  int
	}{
		{"no token", "", "k1", tipBody(id, 1), 401},
		{"invalid token", "x.y.z", "k1", tipBody(id, 1), 401},
		{"missing key", fan, "", tipBody(id, 1), 400},
		{"key too long", fan, long, tipBody(id, 1), 400},
		{"bad JSON", fan, "k2", `{"amount":`, 400},
		{"empty body", fan, "k2", ``, 400},
		{"amount as text", fan, "k2", `{"amount":"5","streamId":1}`, 400},
		{"fractional amount", fan, "k2", `{"amount":1.5,"streamId":1}`, 400},
		{"zero amount", fan, "k2", tipBody(id, 0), 400},
		{"negative amount", fan, "k2", tipBody(id, -5), 400},
		{"amount over the maximum", fan, "k2", tipBody(id, 501), 400},
		{"missing streamId", fan, "k2", `{"amount":5}`, 400},
		{"unknown field", fan, "k2", `{"amount":5,"streamId":1,"to":"x"}`, 400},
		{"unknown stream", fan, "k3", tipBody(999999, 5), 404},
		{"stream not live", fan, "k4", tipBody(ended.ID, 5), 409},
		{"self tip", creator, "k5", tipBody(id, 5), 422},
		{"spend most of the balance", fan, "k6", tipBody(id, 500), 201},
		{"insufficient funds", fan, "k7", tipBody(id, 500), 402},
		{"key reused with another body", fan, "k-happy", tipBody(id, 101), 422},
		{"oversized body", fan, "k8", `{"amount":5,"streamId":1,"pad":"` + strings.Repeat("x", 2<<20) + `"}`, 413},
	} {
		wantProblem(t, b.tip(t, b.api(), tt.auth, tt.key, tt.body), tt.want, tt.name)
	}
	if f, c := b.balance(t, b.fan), b.balance(t, b.creator); f != 400 || c != 600 {
		t.Fatalf("balances after refusals fan=%d creator=%d", f, c)
	}
	// A refused tip releases its key: after a top-up the same key pays.
	if _, err := b.store.Credit(ctx, b.fan, 1000, "topup:"+b.fan); err != nil {
		t.Fatal(err)
	}
	wantProblem(t, b.tip(t, b.api(), fan, "k7", tipBody(id, 500)), 201, "k7 after top-up")
}

// Twenty identical requests at once: one debit, every answer a 201 (first
// or replayed, byte-identical) or a 409 while the first runs.
func TestConcurrentSameKeyDebitsOnce(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	second := b.addAPI(t)
	fan := token(t, b.fan)
	body := tipBody(b.stream.ID, 70)
	var wg sync.WaitGroup
	answers := make([]answer, 20)
	start := make(chan struct{})
	for i := range answers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			answers[i] = b.tip(t, b.apis[i%2], fan, "same-key", body)
		}()
	}
	close(start)
	wg.Wait()
	var created []string
	for _, a := range answers {
		switch a.status {
		case 201:
			created = append(created, a.body)
		case 409:
			if a.header.Get("Retry-After") == "" {
				t.Fatal("409 without Retry-After")
			}
		default:
			t.Fatalf("answer %d %s", a.status, a.body)
		}
	}
	if len(created) == 0 {
		t.Fatal("no request succeeded")
	}
	for _, c := range created {
		if c != created[0] {
			t.Fatalf("replays differ:\n%s\n%s", c, created[0])
		}
	}
	if f, c := b.balance(t, b.fan), b.balance(t, b.creator); f != 930 || c != 70 {
		t.Fatalf("balances fan=%d creator=%d: debited more than once", f, c)
	}
	// Once done, every instance replays the same bytes.
	if a := b.tip(t, second, fan, "same-key", body); a.status != 201 || a.body != created[0] {
		t.Fatalf("late replay %d %s", a.status, a.body)
	}
}

// With the Redis records gone (FLUSHALL), the database still guards the
// money: an old key replays its tip, a new key spends only what is left.
func TestRedisFlushCannotSpendTwice(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	fan := token(t, b.fan)
	body := tipBody(b.stream.ID, 500)
	first := b.tip(t, b.api(), fan, "old-key", body)
	wantProblem(t, first, 201, "first")
	wantProblem(t, b.tip(t, b.api(), fan, "old-key-2", body), 201, "second")
	if b.balance(t, b.fan) != 0 {
		t.Fatal("fan should be empty")
	}
	if err := b.redis.Client(t).FlushAll(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	wantProblem(t, b.tip(t, b.api(), fan, "new-key", tipBody(b.stream.ID, 1)), 402, "new key after flush")
	again := b.tip(t, b.api(), fan, "old-key", body)
	if again.status != 201 || again.body != first.body || again.header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("old key after flush: %d %v %s (want the original tip)", again.status, again.header, again.body)
	}
	// The old key with another amount is still refused by the database.
	wantProblem(t, b.tip(t, b.api(), fan, "old-key", tipBody(b.stream.ID, 1)), 422, "old key, other amount, after flush")
	if f, c := b.balance(t, b.fan), b.balance(t, b.creator); f != 0 || c != 1000 {
		t.Fatalf("balances fan=%d creator=%d", f, c)
	}
}

func TestStrictTierLimitsTips(t *testing.T) {
	t.Parallel()
	b := setup(t, map[string]string{"RATE_LIMIT_OVERRIDES": ""}) // the real strict tier: 10/min
	fan := token(t, b.fan)
	for i := 0; i < 10; i++ {
		a := b.tip(t, b.api(), fan, "rl-"+strconv.Itoa(i), tipBody(b.stream.ID, 1))
		wantProblem(t, a, 201, "within the limit")
		if a.header.Get("X-RateLimit-Limit") != "10" {
			t.Fatalf("limit header %q", a.header.Get("X-RateLimit-Limit"))
		}
	}
	a := b.tip(t, b.api(), fan, "rl-over", tipBody(b.stream.ID, 1))
	wantProblem(t, a, 429, "over the limit")
	if ra, _ := strconv.Atoi(a.header.Get("Retry-After")); ra < 1 || ra > 60 {
		t.Fatalf("Retry-After %q", a.header.Get("Retry-After"))
	}
	// The limit is per user: another user is unaffected.
	other := "other-" + randHex(4)
	if _, err := b.store.Credit(context.Background(), other, 10, "seed:"+other); err != nil {
		t.Fatal(err)
	}
	wantProblem(t, b.tip(t, b.api(), token(t, other), "x", tipBody(b.stream.ID, 1)), 201, "another user")
	if b.balance(t, b.fan) != 990 {
		t.Fatalf("fan balance %d", b.balance(t, b.fan))
	}
}

// Redis down: status is still served from the database (cache fails open,
// rate limits fail open), tips are refused with 503 (idempotency fails
// closed), stream control still works, /readyz says not ready.
func TestRedisDown(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	fan, creator := token(t, b.fan), token(t, b.creator)
	b.redis.Stop()

	a, s := b.status(t, b.api(), b.username, fan)
	if a.status != 200 || !s.Live || a.header.Get("X-Cache") != string(cache.OutcomeDegraded) || !s.Viewer.CanTip {
		t.Fatalf("status with Redis down: %d %q %+v", a.status, a.header.Get("X-Cache"), s)
	}
	tip := b.tip(t, b.api(), fan, "down-1", tipBody(b.stream.ID, 5))
	wantProblem(t, tip, 503, "tip with Redis down")
	if tip.header.Get("Retry-After") == "" || b.balance(t, b.fan) != 1000 {
		t.Fatalf("tip with Redis down: %v balance %d", tip.header, b.balance(t, b.fan))
	}
	wantProblem(t, req(t, http.MethodPost, b.api()+apiapp.StopRoute, `{"streamId":`+strconv.FormatInt(b.stream.ID, 10)+`}`,
		"Authorization", bearer(creator)), 200, "stop with Redis down")
	if _, s := b.status(t, b.api(), b.username, ""); s.Live {
		t.Fatal("status with Redis down is stale")
	}
	if a := req(t, http.MethodGet, b.api()+"/readyz", ""); a.status != 503 {
		t.Fatalf("readyz with Redis down: %d", a.status)
	}

	b.redis.Restart()
	wantProblem(t, req(t, http.MethodGet, b.api()+"/readyz", ""), 200, "readyz after restart")
	// The stop's follow-up job ran once Redis was back (the worker refuses
	// deliveries while it cannot dedupe) and the status key is consistent.
	b.waitJob(t, "streams.notify-followers", 1)
	if _, s := b.status(t, b.api(), b.username, ""); s.Live {
		t.Fatal("stale status after Redis returned")
	}
}

// The fault of issue #14: Redis stalls while a tip is being claimed (the
// claim waits in its socket past the deadline) and resumes. The tip was
// refused 503 "retry with the same Idempotency-Key"; that first retry, on
// another API instance, must go through, and debit once.
func TestTipRetryAfterRedisStallSucceeds(t *testing.T) {
	t.Parallel()
	// The limiter fails open here so the stall reaches the idempotency
	// claim (the strict tier would refuse before it, by default).
	b := setup(t, map[string]string{"RATE_LIMIT_FAILURE": "tips:quick=open"})
	other := b.addAPI(t)
	fan := token(t, b.fan)
	// Loads the scripts and fills the first instance's Redis pool, as in a
	// running API: the stalled commands are then written on open
	// connections (a new one would stall in its handshake, before them).
	var warm sync.WaitGroup
	for i := range 8 {
		warm.Add(1)
		go func() {
			defer warm.Done()
			if a := b.tip(t, b.api(), fan, "warm-up-"+strconv.Itoa(i), tipBody(b.stream.ID, 1)); a.status != http.StatusCreated {
				t.Errorf("warm-up tip = %d %s", a.status, a.body)
			}
		}()
	}
	warm.Wait()

	b.redis.Pause()
	refused := b.tip(t, b.api(), fan, "stalled-1", tipBody(b.stream.ID, 5))
	if refused.status != http.StatusServiceUnavailable || refused.header.Get("Retry-After") == "" {
		b.redis.Resume()
		t.Fatalf("tip while Redis stalls = %d %v, want 503 with Retry-After", refused.status, refused.header)
	}
	// Stalled past the claim's deadline plus its grace (300 ms + 1 s).
	time.Sleep(1500 * time.Millisecond) // the length of the fault, not a wait for a result
	b.redis.Resume()

	retry := b.tip(t, other, fan, "stalled-1", tipBody(b.stream.ID, 5))
	if retry.status != http.StatusCreated {
		t.Fatalf("first retry after Redis resumed = %d %s, want 201", retry.status, retry.body)
	}
	if got := b.balance(t, b.fan); got != 1000-8-5 {
		t.Fatalf("balance = %d, want %d (each tip debited once)", got, 1000-8-5)
	}
	if again := b.tip(t, b.api(), fan, "stalled-1", tipBody(b.stream.ID, 5)); again.status != http.StatusCreated || again.header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("a later retry = %d replayed %q, want the first answer replayed", again.status, again.header.Get("Idempotent-Replayed"))
	}
}

// No Redis key or value holds the viewer's id (an e-mail address here), a
// token, or the client's IP address.
func TestNoPIIInRedis(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	fan, creator := token(t, b.fan), token(t, b.creator)
	b.status(t, b.api(), b.username, fan)
	b.status(t, b.api(), "nobody_here", "")
	wantProblem(t, b.tip(t, b.api(), fan, "pii-1", tipBody(b.stream.ID, 10)), 201, "tip")
	b.tip(t, b.api(), fan, "pii-1", tipBody(b.stream.ID, 10))
	b.tip(t, b.api(), fan, "pii-2", tipBody(b.stream.ID, 5000))
	wantProblem(t, req(t, http.MethodPost, b.api()+apiapp.StopRoute, `{"streamId":`+strconv.FormatInt(b.stream.ID, 10)+`}`, "Authorization", bearer(creator)), 200, "stop")
	b.waitJob(t, "tips.refresh-count", 1)
	b.waitJob(t, "streams.notify-followers", 1)

	ctx := context.Background()
	rdb := b.redis.Client(t)
	forbidden := []string{b.fan, "example.com", "@", fan, creator, "127.0.0.1", "Bearer"}
	keys, err := rdb.Keys(ctx, "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) < 4 {
		t.Fatalf("only %d keys: the scan would prove nothing (%v)", len(keys), keys)
	}
	for _, k := range keys {
		var vals []string
		switch typ := rdb.Type(ctx, k).Val(); typ {
		case "string":
			vals = append(vals, rdb.Get(ctx, k).Val())
		case "hash":
			for f, v := range rdb.HGetAll(ctx, k).Val() {
				vals = append(vals, f, v)
			}
		case "set":
			vals = rdb.SMembers(ctx, k).Val()
		case "list":
			vals = rdb.LRange(ctx, k, 0, -1).Val()
		case "zset":
			vals = rdb.ZRange(ctx, k, 0, -1).Val()
		default:
			t.Fatalf("key %q of unexpected type %s", k, typ)
		}
		if ttl := rdb.PTTL(ctx, k).Val(); ttl < 0 {
			t.Errorf("key %q has no TTL", k)
		}
		for _, s := range append(vals, k) {
			for _, f := range forbidden {
				if strings.Contains(s, f) {
					t.Errorf("key %q holds %q", k, f)
				}
			}
		}
	}
}

func TestBuildRefusesIncompleteWiring(t *testing.T) {
	t.Parallel()
	if _, err := apiapp.Build(apiapp.Config{}, apiapp.Deps{}); err == nil {
		t.Fatal("Build without a store succeeded")
	}
	st, _ := store.NewMemory(store.Options{})
	if _, err := apiapp.Build(apiapp.Config{}, apiapp.Deps{Store: st}); err == nil {
		t.Fatal("Build without an IP source succeeded")
	}
}

// QStash unreachable: every route answers as usual — a tip 201, a stop and
// a start 200 — because the follow-ups are committed with the change, in
// the outbox. Nothing reaches QStash meanwhile; once it is back, each
// follow-up runs once.
func TestQStashDown(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	fan, creator := token(t, b.fan), token(t, b.creator)
	stream := `{"streamId":` + strconv.FormatInt(b.stream.ID, 10) + `}`
	b.front.Down()
	wantProblem(t, b.tip(t, b.api(), fan, "q-1", tipBody(b.stream.ID, 5)), 201, "tip with QStash down")
	wantProblem(t, req(t, http.MethodPost, b.api()+apiapp.StopRoute, stream, "Authorization", bearer(creator)), 200, "stop with QStash down")
	if _, s := b.status(t, b.api(), b.username, ""); s.Live {
		t.Fatal("stream still live") // the change is saved and visible at once
	}
	wantProblem(t, req(t, http.MethodPost, b.api()+apiapp.StartRoute, `{"username":"`+b.username+`","title":"again"}`,
		"Authorization", bearer(creator)), 200, "start with QStash down")
	if b.balance(t, b.fan) != 995 {
		t.Fatal("tip did not move money")
	}
	if got := b.outboxStates(t); got["pending"] != 3 || got["sent"] != 0 {
		t.Fatalf("outbox while QStash is down: %v, want 3 pending rows (the tip's 2 jobs in one, 2 stream changes)", got)
	}

	b.front.Up()
	testwait.For(t, 3*process.RelayMaxBackoff, "the relay to publish everything", func() bool { return b.outboxStates(t)["sent"] == 3 })
	for kind, n := range map[string]float64{"tips.notify-creator": 1, "tips.refresh-count": 1, "streams.notify-followers": 2} {
		b.waitJob(t, kind, n)
		if got := metric(t, b.worker, `jobworker_deliveries_total{job="`+kind+`",outcome="done"}`); got != n {
			t.Errorf("%s ran %v times, want %v", kind, got, n)
		}
	}
}

// outboxStates counts the outbox rows per state.
func (b *bundle) outboxStates(t testing.TB) map[string]int {
	t.Helper()
	out := map[string]int{}
	rows, _ := b.pool.Query(context.Background(), `SELECT state, count(*) FROM jobworker_outbox GROUP BY state`)
	var state string
	var n int
	if _, err := pgx.ForEachRow(rows, []any{&state, &n}, func() error { out[state] = n; return nil }); err != nil {
		t.Fatal(err)
	}
	return out
}

// The local stack's in-memory store has no transaction to write the
// follow-ups in: they are published after the change. With QStash
// unreachable a tip still answers 201 (the money moved; the failed publish
// is logged), while start/stop answer 503 + Retry-After so the client
// retries the idempotent request and the follow-up is not lost.
func TestQStashDownMemoryStore(t *testing.T) {
	t.Parallel()
	b := setupMemory(t, nil)
	fan, creator := token(t, b.fan), token(t, b.creator)
	b.front.Down()
	wantProblem(t, b.tip(t, b.api(), fan, "q-1", tipBody(b.stream.ID, 5)), 201, "tip with QStash down")
	if b.balance(t, b.fan) != 995 {
		t.Fatal("tip did not move money")
	}
	stop := `{"streamId":` + strconv.FormatInt(b.stream.ID, 10) + `}`
	a := req(t, http.MethodPost, b.api()+apiapp.StopRoute, stop, "Authorization", bearer(creator))
	wantProblem(t, a, 503, "stop with QStash down")
	if a.header.Get("Retry-After") == "" {
		t.Fatal("503 without Retry-After")
	}
	// The change itself is saved and visible at once.
	if _, s := b.status(t, b.api(), b.username, ""); s.Live {
		t.Fatal("stream still live")
	}
	// QStash back: the retried stop publishes its follow-up.
	b.front.Up()
	wantProblem(t, req(t, http.MethodPost, b.api()+apiapp.StopRoute, stop, "Authorization", bearer(creator)), 200, "stop retried")
	b.waitJob(t, "streams.notify-followers", 1)
}
