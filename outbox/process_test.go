package outbox_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/digis/jobworker/internal/proctest"
	"github.com/digis/jobworker/internal/testwait"
	"github.com/digis/jobworker/jobs"
	"github.com/digis/jobworker/outbox"
	"github.com/digis/jobworker/qstashdev"
)

// helperEnv selects the helper mode of the test binary: TestMain runs
// helperMain, a relay process, instead of the tests.
const helperEnv = "JOBWORKER_OUTBOX_HELPER"

// helperMain runs a started relay until SIGTERM (graceful Stop, exit 0) or
// SIGKILL. It prints "ready" once started.
func helperMain() int {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	defer pool.Close()
	client, err := jobs.NewClient(jobs.ClientConfig{
		QStashURL: os.Getenv("QSTASH_URL"), Token: qstashdev.DevToken, WorkerPublicURL: os.Getenv("WORKER_URL"),
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	batch, _ := strconv.Atoi(os.Getenv("BATCH"))
	r, err := outbox.New(outbox.Config{
		Pool: pool, Publisher: client, BatchSize: batch, SweepInterval: 50 * time.Millisecond,
		MinBackoff: 5 * time.Millisecond, MaxBackoff: 100 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, nil)),
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM)
	if err := r.Start(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	fmt.Println("ready")
	<-sigs
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := r.Stop(sctx); err != nil {
		fmt.Fprintln(os.Stderr, "stop:", err)
		return 1
	}
	return 0
}

func startHelper(t *testing.T, b *bundle, batch int) *proctest.Proc {
	t.Helper()
	p := proctest.Start(t, os.Args[0], []string{"-test.run=^$"},
		helperEnv+"=1", "DATABASE_URL="+b.db.URL, "QSTASH_URL="+b.front.URL, "WORKER_URL="+b.recv.srv.URL,
		"BATCH="+strconv.Itoa(batch))
	testwait.For(t, 15*time.Second, "the relay process to start", func() bool { return strings.Contains(p.Output(), "ready") })
	return p
}

// A relay process SIGKILLed in the middle of a batch — before QStash got
// it, or after QStash accepted it but before the relay recorded that —
// loses nothing, and the restarted relay's republish is deduplicated by
// QStash: every job is delivered exactly once.
func TestRelayProcessKilledMidBatch(t *testing.T) {
	t.Parallel()
	const jobsN, batch = 200, 50
	for _, tc := range []struct {
		name        string
		accept      bool // QStash accepts the batch before the kill
		wantDeduped int
	}{
		{name: "before QStash answers", accept: false, wantDeduped: 0},
		{name: "after QStash accepted", accept: true, wantDeduped: batch},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			b.enqueueCommitted(t, ids("k", jobsN)...)

			inFlight := make(chan struct{})
			killed := make(chan struct{})
			var once sync.Once
			b.front.setWrap(func(w http.ResponseWriter, r *http.Request, next http.Handler) {
				first := false
				if strings.HasSuffix(r.URL.Path, "/v2/batch") {
					once.Do(func() { first = true })
				}
				if !first {
					next.ServeHTTP(w, r)
					return
				}
				rec := httptest.NewRecorder()
				if tc.accept {
					next.ServeHTTP(rec, r) // QStash has the batch now
				}
				close(inFlight)
				<-killed // the answer goes to a dead process
				w.WriteHeader(http.StatusServiceUnavailable)
			})

			p := startHelper(t, b, batch)
			select {
			case <-inFlight:
			case <-time.After(15 * time.Second):
				t.Fatal("the relay never sent a batch")
			}
			if err := p.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			p.Wait(t, 10*time.Second)
			close(killed)
			b.front.setWrap(nil)

			// The kill undid the claim: nothing was recorded as sent.
			testwait.For(t, 10*time.Second, "the killed session's locks to go", func() bool {
				return b.states(t)["pending"] == jobsN
			})

			p2 := startHelper(t, b, batch)
			testwait.For(t, 20*time.Second, "every row to be sent", func() bool { return b.states(t)["sent"] == jobsN })
			if err := p2.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			if code := p2.Wait(t, 15*time.Second); code != 0 {
				t.Errorf("graceful stop exited %d:\n%s", code, p2.Output())
			}
			testwait.For(t, 20*time.Second, "every delivery", func() bool { return b.recv.distinct() == jobsN })
			if d := b.recv.duplicates(); len(d) > 0 {
				t.Fatalf("delivered more than once: %v", d)
			}
			if n := b.deduplicatedRows(t); n != tc.wantDeduped {
				t.Errorf("%d rows recorded as deduplicated by QStash, want %d", n, tc.wantDeduped)
			}
		})
	}
}
