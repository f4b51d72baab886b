package cmd_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	qstash "github.com/upstash/qstash-go"

	"github.com/digis/jobworker/internal/appjobs"
	"github.com/digis/jobworker/internal/pgtest"
	"github.com/digis/jobworker/internal/proctest"
	"github.com/digis/jobworker/internal/redistest"
	"github.com/digis/jobworker/internal/store"
	"github.com/digis/jobworker/internal/testwait"
	"github.com/digis/jobworker/qstashdev"
	"github.com/digis/jobworker/qstashdev/qstashdevtest"
	"github.com/digis/jobworker/webhooks/webhookstest"
)

const chaosStripeSecret = "whsec_chaos_0123456789"

// TestChaosLedger runs two real worker processes behind one public URL (a
// round-robin proxy), with QStash (qstashdev) and a real PostgreSQL and
// Redis, and sends them Stripe events the way Stripe does — out of order,
// resent, retried until acknowledged — while faults are injected: Redis
// paused past the workers' deadline, killed and restarted empty, a worker
// SIGKILLed mid-flight and restarted. Afterwards every wallet must hold
// exactly what its payment and refunds say: nothing credited or reversed
// twice, nothing lost, nothing dead-lettered.
func TestChaosLedger(t *testing.T) {
	t.Parallel()
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rnd := rand.New(rand.NewPCG(seed, seed>>1))

	bin := proctest.Build(t, "github.com/digis/jobworker/cmd/worker")
	rs := redistest.Start(t)
	db := pgtest.Create(t)
	st, err := store.NewPostgres(db.Pool, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Migrate(context.Background(), db.Pool); err != nil {
		t.Fatal(err)
	}
	qs := qstashdevtest.Start(t, qstashdev.Config{TimeScale: 0.01})
	lb := newBalancer(t)

	env := []string{
		"REDIS_URL=" + rs.URL(), "REDIS_TIMEOUT=200ms", "WORKER_PUBLIC_URL=" + lb.url,
		"QSTASH_CURRENT_SIGNING_KEY=" + qstashdev.DevCurrentSigningKey,
		"QSTASH_NEXT_SIGNING_KEY=" + qstashdev.DevNextSigningKey,
		"STRIPE_WEBHOOK_SECRET=" + chaosStripeSecret, "LOG_FORMAT=text", "LOG_LEVEL=error",
		"QSTASH_URL=" + qs.URL, "QSTASH_TOKEN=" + qstashdev.DevToken, "JOBWORKER_ENV=development", "DATABASE_URL=" + db.URL,
		"SHUTDOWN_TIMEOUT=5s",
	}
	ports := []int{proctest.FreePort(t), proctest.FreePort(t)}
	start := func(i int) *proctest.Proc {
		p := proctest.Start(t, bin, nil, append(env, "PORT="+strconv.Itoa(ports[i]))...)
		p.WaitHealthy(t)
		lb.set(i, p.URL)
		return p
	}
	workers := []*proctest.Proc{start(0), start(1)}

	// Twelve purchases of 100 tokens for 10.00; each gets two partial
	// refunds (3.00, then 6.00 in all), and every other one a full refund.
	type purchase struct {
		user, pi string
		full     bool
	}
	var buys []purchase
	var events [][]byte
	for i := range 12 {
		b := purchase{user: fmt.Sprintf("chaos_user_%02d", i), pi: fmt.Sprintf("pi_chaos_%02d", i), full: i%2 == 0}
		buys = append(buys, b)
		events = append(events,
			chaosEvent("evt_pay_"+b.pi, appjobs.StripePaymentSucceeded, map[string]any{
				"id": b.pi, "object": "payment_intent", "amount": 1000, "status": "succeeded",
				"metadata": map[string]string{appjobs.MetadataUserID: b.user, appjobs.MetadataTokens: "100"},
			}),
			chaosRefund("evt_ref1_"+b.pi, b.pi, 300),
			chaosRefund("evt_ref2_"+b.pi, b.pi, 600),
		)
		if b.full {
			events = append(events, chaosRefund("evt_ref3_"+b.pi, b.pi, 1000))
		}
	}
	// Stripe resends, and does not order: every event twice, shuffled.
	sends := append(append([][]byte{}, events...), events...)
	rnd.Shuffle(len(sends), func(i, j int) { sends[i], sends[j] = sends[j], sends[i] })

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	queue := make(chan []byte)
	var senders sync.WaitGroup
	var acked atomic.Int64
	for range 4 {
		senders.Add(1)
		go func() {
			defer senders.Done()
			for ev := range queue {
				if sendUntilAcknowledged(ctx, lb.url, ev) {
					acked.Add(1)
				}
			}
		}()
	}

	// The faults, one after another, while the events flow.
	faults := make(chan struct{})
	go func() {
		defer close(faults)
		step := func(d time.Duration) bool {
			select {
			case <-ctx.Done():
				return false
			case <-time.After(d):
				return true
			}
		}
		if !step(300 * time.Millisecond) {
			return
		}
		rs.Pause() // past the 200 ms deadline and the claim grace
		step(1500 * time.Millisecond)
		rs.Resume()
		step(700 * time.Millisecond)
		_ = workers[0].Signal(syscall.SIGKILL) // mid-flight, no drain
		lb.set(0, "")
		workers[0].Wait(t, 10*time.Second)
		step(500 * time.Millisecond)
		workers[0] = start(0)
		step(500 * time.Millisecond)
		rs.Kill() // every dedupe record is lost
		step(500 * time.Millisecond)
		rs.Restart()
		step(700 * time.Millisecond)
		rs.Pause() // a short stall, under the deadline and over it at random
		step(time.Duration(100+rnd.IntN(400)) * time.Millisecond)
		rs.Resume()
	}()
	for i, ev := range sends {
		queue <- ev
		if i%8 == 7 {
			time.Sleep(100 * time.Millisecond) // spread the events over the faults: Stripe's pace, not a wait
		}
	}
	close(queue)
	senders.Wait()
	<-faults
	if n := acked.Load(); n != int64(len(sends)) {
		t.Fatalf("Stripe got 200 for %d of %d sends within the time", n, len(sends))
	}

	// Every job runs in the end; then each wallet is exact.
	want := func(b purchase) int64 {
		if b.full {
			return 0
		}
		return 100 - 100*600/1000
	}
	var unsettled string
	defer func() {
		if t.Failed() {
			t.Log("last unsettled wallet: " + unsettled)
		}
	}()
	testwait.For(t, 60*time.Second, "every wallet settled", func() bool {
		for _, b := range buys {
			bal, err := st.Balance(context.Background(), b.user)
			if err != nil || bal != want(b) {
				unsettled = fmt.Sprintf("%s holds %d (%v), want %d", b.user, bal, err, want(b))
				return false
			}
		}
		return true
	})
	for _, b := range buys {
		rf, err := st.RefundState(context.Background(), b.pi)
		if err != nil {
			t.Fatal(err)
		}
		wantReversed := 100 - want(b)
		if rf.Reversed != wantReversed {
			t.Errorf("%s: reversed %d tokens, want %d", b.pi, rf.Reversed, wantReversed)
		}
	}
	var deposits, unbalanced int
	if err := db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM ledger_transactions WHERE kind = 'deposit'`).Scan(&deposits); err != nil {
		t.Fatal(err)
	}
	if err := db.Pool.QueryRow(context.Background(), `
		SELECT count(*) FROM (SELECT transaction_id FROM ledger_entries GROUP BY transaction_id HAVING sum(amount) <> 0) x`).Scan(&unbalanced); err != nil {
		t.Fatal(err)
	}
	if deposits != len(buys) || unbalanced != 0 {
		t.Fatalf("ledger: %d deposits (want %d), %d unbalanced transactions", deposits, len(buys), unbalanced)
	}
	q := qstash.NewClientWith(qstash.Options{Url: qs.URL, Token: qstashdev.DevToken})
	dead, _, err := q.Dlq().List(qstash.ListDlqOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(dead) != 0 {
		t.Fatalf("%d messages dead-lettered: %+v", len(dead), dead[0])
	}
}

func chaosEvent(id, typ string, object map[string]any) []byte {
	b, _ := json.Marshal(map[string]any{
		"id": id, "object": "event", "api_version": "2023-10-16", "created": time.Now().Unix(),
		"livemode": false, "type": typ, "data": map[string]any{"object": object},
	})
	return b
}

// chaosRefund is a charge.refunded with the charge's cumulative refunds.
func chaosRefund(id, pi string, refunded int64) []byte {
	return chaosEvent(id, appjobs.StripeChargeRefunded, map[string]any{
		"id": "ch_" + pi, "object": "charge", "amount": 1000, "amount_captured": 1000,
		"amount_refunded": refunded, "refunded": refunded == 1000, "payment_intent": pi,
	})
}

// sendUntilAcknowledged posts a Stripe event, freshly signed each time, until
// it is answered 200, as Stripe retries any other answer.
func sendUntilAcknowledged(ctx context.Context, base string, ev []byte) bool {
	for ctx.Err() == nil {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, base+"/webhooks/stripe", strings.NewReader(string(ev)))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Stripe-Signature", webhookstest.StripeSignature(chaosStripeSecret, ev, time.Now()))
		res, err := http.DefaultClient.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return true
			}
		}
		select { // Stripe's retry, compressed
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
	return false
}

// balancer is the load balancer in front of the workers: round robin over
// the live ones, the way a platform routes to healthy instances.
type balancer struct {
	url string

	mu       sync.Mutex
	backends []string
	next     int
}

func newBalancer(t *testing.T) *balancer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &balancer{url: "http://" + ln.Addr().String(), backends: make([]string, 2)}
	proxy := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			target, _ := url.Parse(b.pick())
			r.SetURL(target)
			r.Out.Host = r.In.Host
		},
		ErrorLog: nil,
		ErrorHandler: func(w http.ResponseWriter, _ *http.Request, _ error) {
			w.WriteHeader(http.StatusBadGateway)
		},
	}
	srv := &http.Server{Handler: proxy, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return b
}

func (b *balancer) set(i int, url string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.backends[i] = url
}

func (b *balancer) pick() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	for range b.backends {
		b.next = (b.next + 1) % len(b.backends)
		if u := b.backends[b.next]; u != "" {
			return u
		}
	}
	return "http://127.0.0.1:1" // none live: the sender gets 502 and retries
}
