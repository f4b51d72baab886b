package outbox_test

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/digis/jobworker/jobs"
	"github.com/digis/jobworker/outbox"
)

// benchTip is a tip-sized follow-up job, like the API's tips.notify-creator.
type benchTip struct {
	ID        string `json:"id"`
	CreatorID string `json:"creatorId"`
	Amount    int64  `json:"amount"`
}

func (benchTip) Kind() string { return "outbox.bench-tip" }

func (benchTip) EnqueueDefaults() []jobs.EnqueueOption {
	return []jobs.EnqueueOption{jobs.WithRetries(5)}
}

// tipTx is a tip-like transaction: move money from one of 64 fans to one of
// 8 creators and record the tip, optionally with its follow-up job in the
// outbox (last, as the store would).
func tipTx(ctx context.Context, tx pgx.Tx, i int, job func(ctx context.Context, tx pgx.Tx, tipID int64) error) error {
	// Creator first, fan last, in every transaction: no lock cycles.
	if _, err := tx.Exec(ctx, `UPDATE bench_wallets SET balance = balance + 1 WHERE user_id = $1`, "creator-"+strconv.Itoa(i%8)); err != nil {
		return err
	}
	fan := "fan-" + strconv.Itoa(i%64)
	if _, err := tx.Exec(ctx, `UPDATE bench_wallets SET balance = balance - 1 WHERE user_id = $1`, fan); err != nil {
		return err
	}
	var id int64
	if err := tx.QueryRow(ctx, `INSERT INTO bench_tips (tipper, creator, amount) VALUES ($1, $2, 1) RETURNING id`,
		fan, "creator-"+strconv.Itoa(i%8)).Scan(&id); err != nil {
		return err
	}
	if job != nil {
		return job(ctx, tx, id)
	}
	return nil
}

// BenchmarkEnqueueInTx: the cost Enqueue adds to a tip-like transaction,
// against the same transaction without it, and against a bare outbox
// INSERT without the NOTIFY (to show what the wake-up costs).
func BenchmarkEnqueueInTx(b *testing.B) {
	bd := setup(b)
	ctx := context.Background()
	_, err := bd.pool.Exec(ctx, `
		CREATE TABLE bench_wallets (user_id text PRIMARY KEY, balance bigint NOT NULL);
		CREATE TABLE bench_tips (id bigserial PRIMARY KEY, tipper text NOT NULL, creator text NOT NULL,
			amount bigint NOT NULL, created_at timestamptz NOT NULL DEFAULT now());
		INSERT INTO bench_wallets SELECT 'creator-' || g, 0 FROM generate_series(0, 7) g;
		INSERT INTO bench_wallets SELECT 'fan-' || g, 1000000000 FROM generate_series(0, 63) g`)
	if err != nil {
		b.Fatal(err)
	}
	variants := []struct {
		name string
		job  func(ctx context.Context, tx pgx.Tx, tipID int64) error
	}{
		{name: "baseline=no-job"},
		{name: "outbox.Enqueue", job: func(ctx context.Context, tx pgx.Tx, tipID int64) error {
			_, err := outbox.Enqueue(ctx, tx, benchTip{ID: strconv.FormatInt(tipID, 10), CreatorID: "creator-1", Amount: 1})
			return err
		}},
		{name: "insert-without-notify", job: func(ctx context.Context, tx pgx.Tx, tipID int64) error {
			_, err := tx.Exec(ctx, `INSERT INTO jobworker_outbox (id, kind, body, options) VALUES (gen_random_uuid(), $1, $2, $3::jsonb)`,
				"outbox.bench-tip", `{"id":"`+strconv.FormatInt(tipID, 10)+`","creatorId":"creator-1","amount":1}`, `{"retries":5}`)
			return err
		}},
	}
	for _, par := range []int{1, 4} {
		for _, v := range variants {
			b.Run(v.name+"/clients="+strconv.Itoa(par), func(b *testing.B) {
				var mu sync.Mutex
				n := 0
				b.SetParallelism(par) // par × GOMAXPROCS concurrent transactions
				if par == 1 {
					for i := 0; b.Loop(); i++ {
						if err := pgx.BeginFunc(ctx, bd.pool, func(tx pgx.Tx) error { return tipTx(ctx, tx, i, v.job) }); err != nil {
							b.Fatal(err)
						}
					}
					return
				}
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						mu.Lock()
						n++
						i := n
						mu.Unlock()
						if err := pgx.BeginFunc(ctx, bd.pool, func(tx pgx.Tx) error { return tipTx(ctx, tx, i, v.job) }); err != nil {
							b.Error(err)
							return
						}
					}
				})
			})
		}
	}
}

// unbatched publishes each message with its own call: the relay without
// the batch API, for the baseline.
type unbatched struct{ outbox.Publisher }

func (u unbatched) PublishMessages(ctx context.Context, msgs []jobs.Message) ([]jobs.EnqueueResult, error) {
	out := make([]jobs.EnqueueResult, len(msgs))
	for i, m := range msgs {
		var err error
		if out[i], err = u.PublishMessage(ctx, m); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// BenchmarkRelayThroughput drains b.N committed rows into qstash-dev and
// reports jobs/s: batched (POST /v2/batch) against one publish call per
// job (same rounds of 100 rows, no batch API), and against one round per
// job (BatchSize 1), each with one and two concurrent rounds. The jobs are
// delayed by an hour so qstash-dev only stores them: the figure is the
// relay's, not the deliveries'.
func BenchmarkRelayThroughput(b *testing.B) {
	for _, v := range []struct {
		name        string
		batch, conc int
		noBatchAPI  bool
		rtt         time.Duration // added to every QStash call, as a WAN would
	}{
		{"baseline=publish-per-job", 100, 1, true, 0}, {"baseline=publish-per-job", 100, 2, true, 0},
		{"baseline=round-per-job", 1, 2, false, 0},
		{"batch=100", 100, 1, false, 0}, {"batch=100", 100, 2, false, 0}, {"batch=500", 500, 2, false, 0},
		{"rtt=5ms/baseline=publish-per-job", 100, 2, true, 5 * time.Millisecond},
		{"rtt=5ms/batch=100", 100, 2, false, 5 * time.Millisecond},
	} {
		name := v.name + "/rounds=" + strconv.Itoa(v.conc)
		b.Run(name, func(b *testing.B) {
			bd := setup(b)
			if v.rtt > 0 {
				bd.front.setWrap(func(w http.ResponseWriter, r *http.Request, next http.Handler) {
					time.Sleep(v.rtt) // the simulated network, not a wait for a condition
					next.ServeHTTP(w, r)
				})
			}
			ctx := context.Background()
			const perTx = 500
			for i := 0; i < b.N; i += perTx {
				reqs := make([]jobs.EnqueueRequest, 0, perTx)
				for j := i; j < min(i+perTx, b.N); j++ {
					reqs = append(reqs, jobs.EnqueueRequest{Args: testJob{ID: strconv.Itoa(j)}, Options: []jobs.EnqueueOption{jobs.WithDelay(time.Hour)}})
				}
				if _, err := outbox.EnqueueMany(ctx, bd.pool, reqs); err != nil {
					b.Fatal(err)
				}
			}
			r := bd.relay(b, func(c *outbox.Config) {
				c.BatchSize, c.Registerer, c.RunOnceMaxRows, c.RunOnceMaxDuration = v.batch, nil, b.N, time.Hour
				if v.noBatchAPI {
					c.Publisher = unbatched{bd.client}
				}
			})
			b.ResetTimer()
			start := time.Now()
			var wg sync.WaitGroup
			published := make([]int, v.conc)
			for k := range v.conc {
				wg.Go(func() {
					res, err := r.RunOnce(ctx)
					if err != nil {
						b.Error(err)
					}
					published[k] = res.Published
				})
			}
			wg.Wait()
			took := time.Since(start)
			b.StopTimer()
			total := 0
			for _, p := range published {
				total += p
			}
			if total != b.N {
				b.Fatalf("published %d of %d", total, b.N)
			}
			b.ReportMetric(float64(b.N)/took.Seconds(), "jobs/s")
		})
	}
}

// acceptClock wraps the relay's publisher and reports when QStash accepted
// each job (its answer reached the relay), by payload id.
type acceptClock struct {
	outbox.Publisher
	mu      sync.Mutex
	waiters map[string]chan time.Time
}

func (a *acceptClock) wait(id string) <-chan time.Time {
	ch := make(chan time.Time, 1)
	a.mu.Lock()
	a.waiters[id] = ch
	a.mu.Unlock()
	return ch
}

func (a *acceptClock) accepted(msgs ...jobs.Message) {
	now := time.Now()
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, m := range msgs {
		var j testJob
		_ = json.Unmarshal([]byte(m.Body), &j)
		if ch, ok := a.waiters[j.ID]; ok {
			ch <- now
			delete(a.waiters, j.ID)
		}
	}
}

func (a *acceptClock) PublishMessages(ctx context.Context, msgs []jobs.Message) ([]jobs.EnqueueResult, error) {
	res, err := a.Publisher.PublishMessages(ctx, msgs)
	if err == nil {
		a.accepted(msgs...)
	}
	return res, err
}

func (a *acceptClock) PublishMessage(ctx context.Context, m jobs.Message) (jobs.EnqueueResult, error) {
	res, err := a.Publisher.PublishMessage(ctx, m)
	if err == nil {
		a.accepted(m)
	}
	return res, err
}

// BenchmarkCommitToAccepted: from Commit returning to QStash (qstash-dev on
// loopback) accepting the job, with a started relay woken by NOTIFY (the
// sweep is an hour away). Baseline: the API's current way — publish with
// jobs.Client.Enqueue right after the commit — timed from the same point.
// clients is the number of concurrent enqueuers (16 saturate the machine).
// sync-commit: the relay's rounds wait for their commit's flush, as before
// rounds committed asynchronously.
func BenchmarkCommitToAccepted(b *testing.B) {
	for _, clients := range []int{1, 8, 16} {
		for _, mode := range []string{"baseline=enqueue-after-commit", "outbox+relay", "outbox+relay/sync-commit"} {
			b.Run(mode+"/clients="+strconv.Itoa(clients), func(b *testing.B) {
				bd := setup(b)
				ctx := context.Background()
				clock := &acceptClock{Publisher: bd.client, waiters: map[string]chan time.Time{}}
				outbox.SetSyncRounds(mode == "outbox+relay/sync-commit")
				defer outbox.SetSyncRounds(false)
				if mode != "baseline=enqueue-after-commit" {
					r := bd.relay(b, func(c *outbox.Config) {
						c.Publisher, c.SweepInterval, c.Registerer, c.Concurrency = clock, time.Hour, nil, 2
					})
					start(b, r)
				}
				var mu sync.Mutex
				var lat []time.Duration
				next := 0
				b.ResetTimer()
				var wg sync.WaitGroup
				for range clients {
					wg.Go(func() {
						for {
							mu.Lock()
							if next >= b.N {
								mu.Unlock()
								return
							}
							next++
							id := "lat-" + strconv.Itoa(next)
							mu.Unlock()
							var took time.Duration
							if mode != "baseline=enqueue-after-commit" {
								ch := clock.wait(id)
								tx, err := bd.pool.Begin(ctx)
								if err == nil {
									_, err = outbox.Enqueue(ctx, tx, testJob{ID: id})
								}
								if err != nil {
									b.Error(err)
									return
								}
								t0 := time.Now()
								if err := tx.Commit(ctx); err != nil {
									b.Error(err)
									return
								}
								select {
								case at := <-ch:
									took = max(at.Sub(t0), 0)
								case <-time.After(10 * time.Second):
									b.Error("job never accepted")
									return
								}
							} else {
								if err := pgx.BeginFunc(ctx, bd.pool, func(tx pgx.Tx) error {
									_, err := tx.Exec(ctx, "SELECT 1")
									return err
								}); err != nil {
									b.Error(err)
									return
								}
								t0 := time.Now()
								if _, err := bd.client.Enqueue(ctx, testJob{ID: id}); err != nil {
									b.Error(err)
									return
								}
								took = time.Since(t0)
							}
							mu.Lock()
							lat = append(lat, took)
							mu.Unlock()
						}
					})
				}
				wg.Wait()
				b.StopTimer()
				if len(lat) == 0 {
					return
				}
				slices.Sort(lat)
				q := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) / 1000 }
				b.ReportMetric(q(0.5), "p50-ms")
				b.ReportMetric(q(0.99), "p99-ms")
				b.ReportMetric(float64(lat[len(lat)-1].Microseconds())/1000, "max-ms")
			})
		}
	}
}

// nopPublisher accepts everything at once: the relay's database work alone.
type nopPublisher struct{}

func (nopPublisher) PublishMessages(_ context.Context, msgs []jobs.Message) ([]jobs.EnqueueResult, error) {
	out := make([]jobs.EnqueueResult, len(msgs))
	for i := range out {
		out[i] = jobs.EnqueueResult{MessageID: "msg"}
	}
	return out, nil
}

func (p nopPublisher) PublishMessage(ctx context.Context, m jobs.Message) (jobs.EnqueueResult, error) {
	res, _ := p.PublishMessages(ctx, []jobs.Message{m})
	return res[0], nil
}

// BenchmarkRoundAfterSentRows: one relay round (claim, publish to a no-op
// publisher, mark sent, commit) for one fresh row, on a table holding
// sent=N rows that VACUUM has not seen (autovacuum is off for the table),
// as between two autovacuum runs of a busy outbox, with statistics taken
// while those rows were pending (a backlog). plain-scan is the relay's
// claim; bitmap-scan lets the planner use the bitmap scan it then prefers,
// which neither skips nor marks the dead index entries; vacuumed: the same
// after a VACUUM (no ANALYZE). The two
// alternate round by round; each reports its mean µs/round, and the ratio
// is printed.
//
//	go test -run '^$' -bench RoundAfterSentRows -benchtime 400x ./outbox/
func BenchmarkRoundAfterSentRows(b *testing.B) {
	for _, c := range []struct {
		sent     int
		vacuumed bool
	}{{0, false}, {10_000, false}, {30_000, false}, {30_000, true}} {
		sent := c.sent
		name := "sent=" + strconv.Itoa(sent)
		if c.vacuumed {
			name += "/vacuumed"
		}
		b.Run(name, func(b *testing.B) {
			bd := setup(b)
			ctx := context.Background()
			if _, err := bd.pool.Exec(ctx, `ALTER TABLE jobworker_outbox SET (autovacuum_enabled = off)`); err != nil {
				b.Fatal(err)
			}
			if _, err := bd.pool.Exec(ctx, `INSERT INTO jobworker_outbox (id, kind, body)
				SELECT gen_random_uuid(), 'outbox.test', '{}' FROM generate_series(1, $1::int)`, sent); err != nil {
				b.Fatal(err)
			}
			// Statistics taken during a backlog (an outage), as an
			// autovacuum ANALYZE may: many pending rows, so the planner
			// expects to find some and prefers a bitmap scan.
			if _, err := bd.pool.Exec(ctx, `ANALYZE jobworker_outbox`); err != nil {
				b.Fatal(err)
			}
			if _, err := bd.pool.Exec(ctx, `UPDATE jobworker_outbox SET state = 'sent', finished_at = now()`); err != nil {
				b.Fatal(err)
			}
			if c.vacuumed {
				// VACUUM without ANALYZE: the dead index entries go, the
				// backlog's statistics stay.
				if _, err := bd.pool.Exec(ctx, `VACUUM jobworker_outbox`); err != nil {
					b.Fatal(err)
				}
			}
			r := bd.relay(b, func(c *outbox.Config) { c.Publisher, c.Registerer = nopPublisher{}, nil })
			defer outbox.SetBitmapRounds(false)
			took := map[bool]time.Duration{}
			b.ResetTimer()
			for i := range b.N {
				bitmap := i%2 == 1
				b.StopTimer()
				bd.enqueueCommitted(b, "r-"+strconv.Itoa(i))
				outbox.SetBitmapRounds(bitmap)
				b.StartTimer()
				t0 := time.Now()
				res, err := r.RunOnce(ctx)
				took[bitmap] += time.Since(t0)
				if err != nil || res.Published != 1 {
					b.Fatalf("RunOnce = %+v, %v", res, err)
				}
			}
			n := float64(max(b.N/2, 1))
			plain, bitmap := float64(took[false].Microseconds())/n, float64(took[true].Microseconds())/n
			b.ReportMetric(plain, "plain-scan-µs/round")
			b.ReportMetric(bitmap, "bitmap-scan-µs/round")
			b.ReportMetric(bitmap/plain, "bitmap/plain")
		})
	}
}
