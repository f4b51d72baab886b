package store_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/digis/jobworker/internal/pgtest"
	"github.com/digis/jobworker/internal/store"
	"github.com/digis/jobworker/internal/testwait"
	"github.com/digis/jobworker/outbox"
)

// followJob is the job the tests' follow-ups write into the outbox.
type followJob struct {
	Ref string `json:"ref"`
}

func (followJob) Kind() string { return "store.follow-up" }

// outboxRefs lists the refs of the committed outbox rows, as any other
// connection (a relay) sees them.
func outboxRefs(t *testing.T, pool *pgxpool.Pool) []string {
	t.Helper()
	rows, err := pool.Query(t.Context(), `SELECT body::jsonb->>'ref' FROM jobworker_outbox ORDER BY created_at, id`)
	if err != nil {
		t.Fatal(err)
	}
	refs, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return refs
}

// followUps writes one outbox row per tip and stream change, and fails
// instead when the tip's amount or the stream's title is poison.
func followUps(poisonAmount int64, poisonTitle string) store.FollowUps {
	enqueue := func(ctx context.Context, tx outbox.Tx, ref string) error {
		_, err := outbox.Enqueue(ctx, tx, followJob{Ref: ref})
		return err
	}
	return store.FollowUps{
		Tip: func(ctx context.Context, tx store.Pipeline, t store.Tip) error {
			if t.Amount == poisonAmount {
				return errPoison
			}
			return enqueue(ctx, tx, "tip:"+t.IdempotencyKey)
		},
		StreamChange: func(ctx context.Context, tx pgx.Tx, st store.Stream) error {
			if st.Title == poisonTitle {
				return errPoison
			}
			return enqueue(ctx, tx, st.Username+":"+map[bool]string{true: "live", false: "ended"}[st.Live])
		},
	}
}

var errPoison = errors.New("follow-up refused")

// The follow-ups commit with the change and only with it: nothing for a
// refused tip, a replay, a restart of a live stream or a second stop, and a
// failing follow-up takes its change back with it.
func TestFollowUpsCommitWithTheChange(t *testing.T) {
	t.Parallel()
	base, pool := newPostgres(t)
	s := base.WithFollowUps(followUps(13, "poison"))
	ctx := t.Context()
	creator, fan := "creator", "fan"
	if _, err := s.Credit(ctx, fan, 100, "pi_seed"); err != nil {
		t.Fatal(err)
	}
	var st store.Stream
	steps := []struct {
		name    string
		do      func() error
		wantErr error
		want    []string // committed outbox refs after the step
	}{
		{"first start: went live", func() (err error) {
			st, err = s.StartStream(ctx, store.StartStreamRequest{CreatorID: creator, Username: "chan", Title: "hi"})
			return err
		}, nil, []string{"chan:live"}},
		{"start again: a new title, no new state", func() error {
			_, err := s.StartStream(ctx, store.StartStreamRequest{CreatorID: creator, Username: "chan", Title: "new title"})
			return err
		}, nil, []string{"chan:live"}},
		{"start by someone else", func() error {
			_, err := s.StartStream(ctx, store.StartStreamRequest{CreatorID: fan, Username: "chan"})
			return err
		}, store.ErrNotCreator, []string{"chan:live"}},
		{"tip", func() error {
			_, err := s.Tip(ctx, store.TipRequest{TipperID: fan, StreamID: st.ID, Amount: 10, IdempotencyKey: "k1"})
			return err
		}, nil, []string{"chan:live", "tip:k1"}},
		{"tip replayed", func() error {
			tip, err := s.Tip(ctx, store.TipRequest{TipperID: fan, StreamID: st.ID, Amount: 10, IdempotencyKey: "k1"})
			if err == nil && !tip.Replayed {
				return errors.New("not replayed")
			}
			return err
		}, nil, []string{"chan:live", "tip:k1"}},
		{"tip over the balance: written follow-ups, then the transfer fails", func() error {
			_, err := s.Tip(ctx, store.TipRequest{TipperID: fan, StreamID: st.ID, Amount: 91, IdempotencyKey: "k2"})
			return err
		}, store.ErrInsufficientFunds, []string{"chan:live", "tip:k1"}},
		{"self tip", func() error {
			_, err := s.Tip(ctx, store.TipRequest{TipperID: creator, StreamID: st.ID, Amount: 1, IdempotencyKey: "k3"})
			return err
		}, store.ErrSelfTip, []string{"chan:live", "tip:k1"}},
		{"tip whose follow-up fails: the money stays", func() error {
			_, err := s.Tip(ctx, store.TipRequest{TipperID: fan, StreamID: st.ID, Amount: 13, IdempotencyKey: "k4"})
			return err
		}, errPoison, []string{"chan:live", "tip:k1"}},
		{"stop: ended", func() error { _, err := s.StopStream(ctx, creator, st.ID); return err }, nil,
			[]string{"chan:live", "tip:k1", "chan:ended"}},
		{"stop again", func() error { _, err := s.StopStream(ctx, creator, st.ID); return err }, nil,
			[]string{"chan:live", "tip:k1", "chan:ended"}},
		{"stop by someone else", func() error { _, err := s.StopStream(ctx, fan, st.ID); return err }, store.ErrNotCreator,
			[]string{"chan:live", "tip:k1", "chan:ended"}},
		{"start whose follow-up fails: the stream stays ended", func() error {
			_, err := s.StartStream(ctx, store.StartStreamRequest{CreatorID: creator, Username: "chan", Title: "poison"})
			return err
		}, errPoison, []string{"chan:live", "tip:k1", "chan:ended"}},
		{"the store without follow-ups writes none", func() error {
			_, err := base.StartStream(ctx, store.StartStreamRequest{CreatorID: creator, Username: "chan", Title: "plain"})
			return err
		}, nil, []string{"chan:live", "tip:k1", "chan:ended"}},
	}
	for _, step := range steps {
		err := step.do()
		if !errors.Is(err, step.wantErr) {
			t.Fatalf("%s: err = %v, want %v", step.name, err, step.wantErr)
		}
		if got := outboxRefs(t, pool); strings.Join(got, " ") != strings.Join(step.want, " ") {
			t.Fatalf("%s: outbox holds %v, want %v", step.name, got, step.want)
		}
	}
	if b, _ := s.Balance(ctx, fan); b != 90 {
		t.Fatalf("fan balance %d, want 90: a refused tip moved money", b)
	}
	if got, _ := s.StreamByID(ctx, st.ID); !got.Live || got.Title != "plain" {
		t.Fatalf("stream %+v, want live with the last title", got)
	}
}

// A tip's follow-ups are pipelined with the transfer's first statement: one
// that the database refuses (here a row id that is no UUID) still fails
// the tip, named as the follow-ups' failure, and nothing commits.
func TestTipFollowUpRefusedByTheDatabase(t *testing.T) {
	t.Parallel()
	base, pool := newPostgres(t)
	ctx := t.Context()
	bad := base.WithFollowUps(store.FollowUps{Tip: func(ctx context.Context, tx store.Pipeline, _ store.Tip) error {
		_, err := tx.Exec(ctx, `INSERT INTO jobworker_outbox (id, kind, body, options) VALUES ($1::uuid, 'k', '{}', '{}')`, "not-a-uuid")
		return err
	}})
	st, err := base.StartStream(ctx, store.StartStreamRequest{CreatorID: "creator", Username: "chan"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := base.Credit(ctx, "fan", 100, "pi_seed"); err != nil {
		t.Fatal(err)
	}
	_, err = bad.Tip(ctx, store.TipRequest{TipperID: "fan", StreamID: st.ID, Amount: 10, IdempotencyKey: "k"})
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "22P02" || !strings.Contains(err.Error(), "tip follow-ups") {
		t.Fatalf("err = %v, want the follow-up's invalid_text_representation, named as such", err)
	}
	if b, _ := base.Balance(ctx, "fan"); b != 100 {
		t.Fatalf("fan balance %d, want 100: the refused tip moved money", b)
	}
	if refs := outboxRefs(t, pool); len(refs) != 0 {
		t.Fatalf("outbox holds %v", refs)
	}
	// The key was not spent: the same tip through a working store goes in.
	good := base.WithFollowUps(followUps(-1, "never"))
	if _, err := good.Tip(ctx, store.TipRequest{TipperID: "fan", StreamID: st.ID, Amount: 10, IdempotencyKey: "k"}); err != nil {
		t.Fatal(err)
	}
	if refs := outboxRefs(t, pool); strings.Join(refs, " ") != "tip:k" {
		t.Fatalf("outbox holds %v, want the retried tip's row", refs)
	}
}

// A follow-up written in a transaction is invisible to every other
// connection (a relay) until that transaction commits.
func TestFollowUpInvisibleUntilCommit(t *testing.T) {
	t.Parallel()
	base, pool := newPostgres(t)
	s := base.WithFollowUps(followUps(-1, "never"))
	ctx := t.Context()
	st, err := s.StartStream(ctx, store.StartStreamRequest{CreatorID: "creator", Username: "chan"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Credit(ctx, "fan", 100, "pi_seed"); err != nil {
		t.Fatal(err)
	}
	paused, release := make(chan struct{}), make(chan struct{})
	store.SetBeforeCommit(s, func(op string) {
		if op == "tip" {
			close(paused)
			<-release
		}
	})
	done := make(chan error, 1)
	go func() {
		_, err := s.Tip(ctx, store.TipRequest{TipperID: "fan", StreamID: st.ID, Amount: 5, IdempotencyKey: "held"})
		done <- err
	}()
	<-paused // the row is written, the transaction open
	if got := outboxRefs(t, pool); len(got) != 1 {
		t.Fatalf("before commit the outbox shows %v, want only the stream's row", got)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := outboxRefs(t, pool); len(got) != 2 || got[1] != "tip:held" {
		t.Fatalf("after commit the outbox shows %v", got)
	}
}

func TestReceiveStripeEvent(t *testing.T) {
	t.Parallel()
	s, pool := newPostgres(t)
	ctx := t.Context()
	runs := 0
	then := func(ctx context.Context, tx pgx.Tx) error {
		runs++
		_, err := outbox.Enqueue(ctx, tx, followJob{Ref: "stripe"})
		return err
	}
	r := store.StripeEventReceipt{ID: "evt_1", Type: "payment_intent.succeeded", Retention: 7 * 24 * time.Hour}

	failing := func(context.Context, pgx.Tx) error { return errPoison }
	if dup, err := s.ReceiveStripeEvent(ctx, r, failing); !errors.Is(err, errPoison) || dup {
		t.Fatalf("failing follow-up: dup=%v err=%v", dup, err)
	}
	for i, want := range []bool{false, true, true} {
		dup, err := s.ReceiveStripeEvent(ctx, r, then)
		if err != nil || dup != want {
			t.Fatalf("receipt %d: dup=%v err=%v, want dup=%v", i+1, dup, err, want)
		}
	}
	if runs != 1 || len(outboxRefs(t, pool)) != 1 {
		t.Fatalf("follow-up ran %d times, outbox %v; want once (the failed receipt left nothing)", runs, outboxRefs(t, pool))
	}
	for _, bad := range []store.StripeEventReceipt{{}, {ID: strings.Repeat("e", 256)}, {ID: "evt", Type: strings.Repeat("t", 256)}, {ID: "evt", Retention: -1}} {
		if _, err := s.ReceiveStripeEvent(ctx, bad, then); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("receipt %+v: err = %v, want ErrInvalid", bad, err)
		}
	}
}

// Redeliveries of one event at the same moment: the first holds its
// transaction open at the worst moment, right before its commit, while the
// others wait on its row; exactly one follow-up commits.
func TestReceiveStripeEventConcurrent(t *testing.T) {
	t.Parallel()
	s, pool := newPostgres(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	paused, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	store.SetBeforeCommit(s, func(op string) {
		once.Do(func() { close(paused); <-release })
	})
	r := store.StripeEventReceipt{ID: "evt_race", Type: "charge.refunded"}
	then := func(ctx context.Context, tx pgx.Tx) error {
		_, err := outbox.Enqueue(ctx, tx, followJob{Ref: "race"})
		return err
	}
	const n = 5
	dups := make(chan bool, n)
	errs := make(chan error, n)
	receive := func() {
		dup, err := s.ReceiveStripeEvent(ctx, r, then)
		dups <- dup
		errs <- err
	}
	go receive()
	<-paused
	for range n - 1 {
		go receive()
	}
	testwait.For(t, 10*time.Second, "the redeliveries to wait on the first receipt's row", func() bool {
		var waiting int
		err := pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock'`).Scan(&waiting)
		return err == nil && waiting == n-1
	})
	close(release)
	fresh := 0
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
		if !<-dups {
			fresh++
		}
	}
	if got := outboxRefs(t, pool); fresh != 1 || len(got) != 1 {
		t.Fatalf("%d first receipts, outbox %v; want exactly one", fresh, got)
	}
}

// Receipts past the retention are deleted by later receipts, a few at a
// time; a retention of 0 keeps them.
func TestReceiveStripeEventPrunes(t *testing.T) {
	t.Parallel()
	s, pool := newPostgres(t)
	ctx := t.Context()
	if _, err := pool.Exec(ctx, `INSERT INTO stripe_events (event_id, type, received_at)
		SELECT 'evt_old_' || g, 'x', now() - interval '8 days' FROM generate_series(1, 15) g`); err != nil {
		t.Fatal(err)
	}
	old := func() int {
		var n int
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM stripe_events WHERE event_id LIKE 'evt_old_%'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	for _, step := range []struct {
		id        string
		retention time.Duration
		wantOld   int
	}{
		{"evt_a", 0, 15},
		{"evt_b", 7 * 24 * time.Hour, 5},
		{"evt_c", 7 * 24 * time.Hour, 0},
	} {
		if _, err := s.ReceiveStripeEvent(ctx, store.StripeEventReceipt{ID: step.id, Retention: step.retention}, nil); err != nil {
			t.Fatal(err)
		}
		if got := old(); got != step.wantOld {
			t.Fatalf("after %s: %d expired receipts left, want %d", step.id, got, step.wantOld)
		}
	}
	// A receipt within the retention stays, and still dedupes.
	if dup, err := s.ReceiveStripeEvent(ctx, store.StripeEventReceipt{ID: "evt_b", Retention: time.Hour}, nil); err != nil || !dup {
		t.Fatalf("recent receipt: dup=%v err=%v", dup, err)
	}
}

// The store's migrations include the outbox's, and readiness fails while
// the outbox table is missing.
func TestSchemaIncludesOutbox(t *testing.T) {
	t.Parallel()
	db := pgtest.Create(t)
	ctx := t.Context()
	if err := store.Migrate(ctx, db.Pool); err != nil {
		t.Fatal(err)
	}
	if err := outbox.CheckSchema(ctx, db.Pool); err != nil {
		t.Fatalf("outbox after store.Migrate: %v", err)
	}
	if _, err := db.Pool.Exec(ctx, `DROP TABLE jobworker_outbox_migrations`); err != nil {
		t.Fatal(err)
	}
	err := store.CheckSchema(ctx, db.Pool)
	if !errors.Is(err, store.ErrSchemaBehind) || !errors.Is(err, outbox.ErrSchemaBehind) || !strings.Contains(err.Error(), "api -migrate") {
		t.Fatalf("CheckSchema without the outbox = %v", err)
	}
	if err := store.Migrate(ctx, db.Pool); err != nil {
		t.Fatal(err)
	}
	if err := store.CheckSchema(ctx, db.Pool); err != nil {
		t.Fatal(err)
	}
}
