package apiapp_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/digis/jobworker/internal/store"
	"github.com/digis/jobworker/internal/testwait"
	"github.com/digis/jobworker/jobs"
	"github.com/digis/jobworker/outbox"
	"github.com/digis/jobworker/qstashdev"
)

// countPublishes counts the publish calls reaching QStash.
func (b *bundle) countPublishes() *atomic.Int64 {
	var n atomic.Int64
	b.front.Wrap(func(w http.ResponseWriter, r *http.Request, next http.Handler) {
		if strings.HasPrefix(r.URL.Path, "/v2/publish/") || r.URL.Path == "/v2/batch" {
			n.Add(1)
		}
		next.ServeHTTP(w, r)
	})
	return &n
}

// relay is a relay of the test's own on the API's database, to look at the
// outbox the way every relay does.
func (b *bundle) relay(t *testing.T) *outbox.Relay {
	t.Helper()
	client, err := jobs.NewClient(jobs.ClientConfig{QStashURL: b.front.URL, Token: qstashdev.DevToken, WorkerPublicURL: b.worker})
	if err != nil {
		t.Fatal(err)
	}
	r, err := outbox.New(outbox.Config{Pool: b.pool, Publisher: client})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// atCommitOfTip installs a deferred constraint trigger on tips that runs the
// PL/pgSQL statement at COMMIT of a tip of amount tokens: after the tip's
// follow-ups were written, before they are committed.
func (b *bundle) atCommitOfTip(t *testing.T, amount int64, statement string) {
	t.Helper()
	_, err := b.pool.Exec(context.Background(), fmt.Sprintf(`
		CREATE FUNCTION at_commit_%[1]d() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			IF NEW.amount = %[1]d THEN
				%[2]s;
			END IF;
			RETURN NULL;
		END $$;
		CREATE CONSTRAINT TRIGGER tips_at_commit_%[1]d AFTER INSERT ON tips
			DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION at_commit_%[1]d()`, amount, statement))
	if err != nil {
		t.Fatal(err)
	}
}

// A tip whose transaction rolls back publishes nothing: not when the store
// refuses it (no money, not live, self tip), and not when it fails at
// COMMIT after its follow-ups were written. The latter is a deferred
// constraint (the kind the ledger's balance check is) installed by the
// test that refuses tips of 13 tokens.
func TestRolledBackTipPublishesNothing(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	ctx := context.Background()
	b.atCommitOfTip(t, 13, `RAISE EXCEPTION 'refused at commit' USING ERRCODE = 'P0001'`)
	ended, err := b.store.StartStream(ctx, store.StartStreamRequest{CreatorID: b.creator, Username: "off_" + randHex(3)})
	if err == nil {
		_, err = b.store.StopStream(ctx, b.creator, ended.ID)
	}
	if err == nil {
		_, err = b.store.Credit(ctx, "poor-fan", 3, "seed:poor")
	}
	if err != nil {
		t.Fatal(err)
	}
	publishes := b.countPublishes()
	fan, poor, creator := token(t, b.fan), token(t, "poor-fan"), token(t, b.creator)
	for _, tt := range []struct {
		name, tok, key string
		stream, amount int64
		want           int
	}{
		{"fails at commit, after its follow-ups were written", fan, "r-commit", b.stream.ID, 13, 500},
		{"insufficient funds", poor, "r-funds", b.stream.ID, 5, 402},
		{"stream not live", fan, "r-ended", ended.ID, 5, 409},
		{"self tip", creator, "r-self", b.stream.ID, 5, 422},
		{"the one that commits", fan, "r-ok", b.stream.ID, 100, 201},
	} {
		wantProblem(t, b.tip(t, b.api(), tt.tok, tt.key, tipBody(tt.stream, tt.amount)), tt.want, tt.name)
	}
	// Only the one tip that committed left a row (its two jobs in one), and
	// a relay finds only that.
	testwait.For(t, 10*time.Second, "the committed tip's jobs sent", func() bool { return b.outboxStates(t)["sent"] == 1 })
	if got := b.outboxStates(t); len(got) != 1 || got["sent"] != 1 {
		t.Fatalf("outbox %v: a rolled-back tip left rows", got)
	}
	res, err := b.relay(t).RunOnce(ctx)
	if err != nil || res.Published != 0 {
		t.Fatalf("a relay found %+v (%v) after the refusals", res, err)
	}
	b.waitJob(t, "tips.notify-creator", 1)
	if n := publishes.Load(); n != 1 {
		t.Fatalf("%d publish calls reached QStash, want 1 (the committed tip's batch)", n)
	}
	if f, p := b.balance(t, b.fan), b.balance(t, "poor-fan"); f != 900 || p != 3 {
		t.Fatalf("balances fan=%d poor=%d, want 900 and 3", f, p)
	}
}

// A tip's follow-ups are invisible to every relay until the tip's
// transaction commits. The test holds the transaction at COMMIT (a deferred
// trigger waits for an advisory lock the test holds) with the rows
// written, and looks.
func TestTipJobsInvisibleUntilCommit(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	ctx := context.Background()
	b.atCommitOfTip(t, 17, `PERFORM pg_advisory_xact_lock(1717)`)
	holder, err := b.pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Release()
	if _, err := holder.Exec(ctx, `SELECT pg_advisory_lock(1717)`); err != nil {
		t.Fatal(err)
	}
	publishes := b.countPublishes()
	answer := make(chan answer, 1)
	go func() { answer <- b.tip(t, b.api(), token(t, b.fan), "held", tipBody(b.stream.ID, 17)) }()
	testwait.For(t, 10*time.Second, "the tip to wait at its commit", func() bool {
		var n int
		err := b.pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock' AND wait_event = 'advisory'`).Scan(&n)
		return err == nil && n == 1
	})
	// The rows are written and the transaction open: nobody else sees them.
	if got := b.outboxStates(t); len(got) != 0 {
		t.Fatalf("outbox seen from another connection before the commit: %v", got)
	}
	if res, err := b.relay(t).RunOnce(ctx); err != nil || res.Published != 0 || res.Rounds != 1 {
		t.Fatalf("a relay before the commit: %+v (%v)", res, err)
	}
	if n := publishes.Load(); n != 0 {
		t.Fatalf("%d publish calls before the commit", n)
	}
	if _, err := holder.Exec(ctx, `SELECT pg_advisory_unlock(1717)`); err != nil {
		t.Fatal(err)
	}
	wantProblem(t, <-answer, 201, "the held tip, committed")
	b.waitJob(t, "tips.notify-creator", 1)
	b.waitJob(t, "tips.refresh-count", 1)
}

// With OUTBOX_RELAY=off the API runs no relay (and serves none of its
// metrics); its follow-ups are published by the relay of another process on
// the database, here the worker's, woken by the API's NOTIFY.
func TestAPIWithoutItsRelay(t *testing.T) {
	t.Parallel()
	b := setup(t, map[string]string{"OUTBOX_RELAY": "off"})
	wantProblem(t, b.tip(t, b.api(), token(t, b.fan), "no-relay", tipBody(b.stream.ID, 5)), 201, "tip")
	b.waitJob(t, "tips.notify-creator", 1)
	b.waitJob(t, "tips.refresh-count", 1)
	if n := metric(t, b.api(), "jobworker_outbox_listening"); n != 0 {
		t.Fatalf("the API serves relay metrics (listening=%v) with OUTBOX_RELAY=off", n)
	}
	if n := metric(t, b.worker, `jobworker_outbox_published_total{job="tips.notify-creator",result="ok"}`); n != 1 {
		t.Fatalf("the worker's relay published %v notify jobs, want 1", n)
	}
}
