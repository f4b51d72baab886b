package store_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/digis/jobworker/internal/pgtest"
	"github.com/digis/jobworker/internal/store"
)

// maxTip is the tip cap every contract test runs with.
const maxTip = 1_000

// impl builds one Store implementation for one test.
type impl struct {
	name string
	new  func(t *testing.T) bundle
}

// bundle is what a contract case gets: the store and a way to age every
// tip by d (Postgres rewrites created_at, Memory moves its clock).
type bundle struct {
	s       store.Store
	ageTips func(t *testing.T, d time.Duration)
	pool    *pgxpool.Pool // nil for Memory
}

var impls = []impl{
	{"postgres", func(t *testing.T) bundle {
		pool := pgtest.New(t)
		s, err := store.NewPostgres(pool, store.Options{MaxTipAmount: maxTip})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { checkLedger(t, pool) })
		return bundle{s: s, pool: pool, ageTips: func(t *testing.T, d time.Duration) {
			if _, err := pool.Exec(context.Background(), `UPDATE tips SET created_at = created_at - $1::interval`, d); err != nil {
				t.Fatal(err)
			}
		}}
	}},
	{"memory", func(t *testing.T) bundle {
		var offset atomic.Int64
		s, err := store.NewMemory(store.Options{MaxTipAmount: maxTip, Now: func() time.Time {
			return time.Now().Add(time.Duration(offset.Load()))
		}})
		if err != nil {
			t.Fatal(err)
		}
		return bundle{s: s, ageTips: func(_ *testing.T, d time.Duration) { offset.Add(int64(d)) }}
	}},
}

// checkLedger asserts the double-entry invariants after a test: every
// account's balance is the sum of its entries, all balances sum to zero,
// every transaction balances, no user is negative.
func checkLedger(t *testing.T, pool *pgxpool.Pool) {
	t.Helper()
	ctx := context.Background()
	var bad, total, negatives, unbalanced int64
	err := pool.QueryRow(ctx, `
		SELECT
		  (SELECT count(*) FROM accounts a WHERE a.balance <> coalesce((SELECT sum(amount) FROM ledger_entries e WHERE e.account_id = a.id), 0)),
		  (SELECT coalesce(sum(balance), 0)::bigint FROM accounts),
		  (SELECT count(*) FROM accounts WHERE user_id IS NOT NULL AND balance < 0),
		  (SELECT count(*) FROM (SELECT transaction_id FROM ledger_entries GROUP BY 1 HAVING sum(amount) <> 0) x)`).
		Scan(&bad, &total, &negatives, &unbalanced)
	if err != nil {
		t.Fatalf("check ledger: %v", err)
	}
	if bad != 0 || total != 0 || negatives != 0 || unbalanced != 0 {
		t.Errorf("ledger invariants broken: %d balances differ from entries, total %d, %d negative, %d unbalanced", bad, total, negatives, unbalanced)
	}
}

// contractCase is one behaviour every Store must have.
type contractCase struct {
	name string
	run  func(t *testing.T, b bundle)
}

// contract is the behaviour every Store must have, run against each
// implementation (refundContract, in refunds_test.go, too).
var contract = []contractCase{
	{"start claims username and lookups find it", func(t *testing.T, b bundle) {
		ctx := t.Context()
		st := mustStart(t, b.s, "alice", "Alice", "hello")
		if !st.Live || st.CreatorID != "alice" || st.Username != "alice" || st.Title != "hello" || st.StartedAt == nil || st.EndedAt != nil || st.ID <= 0 {
			t.Fatalf("started stream = %+v", st)
		}
		got, err := b.s.StreamByUsername(ctx, "ALICE")
		if err != nil || got.ID != st.ID {
			t.Fatalf("by username = %+v, %v", got, err)
		}
		got, err = b.s.StreamByID(ctx, st.ID)
		if err != nil || got.Username != "alice" {
			t.Fatalf("by id = %+v, %v", got, err)
		}
		for _, name := range []string{"nobody", "x", "bad name!", ""} {
			if _, err := b.s.StreamByUsername(ctx, name); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("StreamByUsername(%q) err = %v, want ErrNotFound", name, err)
			}
		}
		if _, err := b.s.StreamByID(ctx, st.ID+1000); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("StreamByID(unknown) err = %v", err)
		}
	}},
	{"start validates input", func(t *testing.T, b bundle) {
		long := make([]byte, 201)
		for i := range long {
			long[i] = 'a'
		}
		for _, req := range []store.StartStreamRequest{
			{CreatorID: "", Username: "alice"},
			{CreatorID: "alice", Username: "al"},
			{CreatorID: "alice", Username: "al ice"},
			{CreatorID: "alice", Username: "alice", Title: string(long)},
		} {
			if _, err := b.s.StartStream(t.Context(), req); !errors.Is(err, store.ErrInvalid) {
				t.Errorf("StartStream(%+v) err = %v, want ErrInvalid", req, err)
			}
		}
	}},
	{"username owned by another creator", func(t *testing.T, b bundle) {
		st := mustStart(t, b.s, "alice", "alice", "")
		if _, err := b.s.StartStream(t.Context(), store.StartStreamRequest{CreatorID: "mallory", Username: "Alice"}); !errors.Is(err, store.ErrNotCreator) {
			t.Fatalf("foreign start err = %v, want ErrNotCreator", err)
		}
		if _, err := b.s.StopStream(t.Context(), "mallory", st.ID); !errors.Is(err, store.ErrNotCreator) {
			t.Fatalf("foreign stop err = %v, want ErrNotCreator", err)
		}
		if got, _ := b.s.StreamByID(t.Context(), st.ID); !got.Live || got.CreatorID != "alice" {
			t.Fatalf("stream changed by a foreign caller: %+v", got)
		}
	}},
	{"restart while live keeps started_at", func(t *testing.T, b bundle) {
		first := mustStart(t, b.s, "alice", "alice", "one")
		again := mustStart(t, b.s, "alice", "alice", "two")
		if again.ID != first.ID || !again.StartedAt.Equal(*first.StartedAt) || again.Title != "two" {
			t.Fatalf("restart = %+v, first %+v", again, first)
		}
	}},
	{"stop, stop again, start again", func(t *testing.T, b bundle) {
		ctx := t.Context()
		st := mustStart(t, b.s, "alice", "alice", "")
		stopped, err := b.s.StopStream(ctx, "alice", st.ID)
		if err != nil || stopped.Live || stopped.EndedAt == nil {
			t.Fatalf("stop = %+v, %v", stopped, err)
		}
		again, err := b.s.StopStream(ctx, "alice", st.ID)
		if err != nil || again.Live || !again.EndedAt.Equal(*stopped.EndedAt) {
			t.Fatalf("second stop = %+v, %v (must be unchanged)", again, err)
		}
		if _, err := b.s.StopStream(ctx, "alice", st.ID+1000); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("stop unknown err = %v", err)
		}
		restarted := mustStart(t, b.s, "alice", "alice", "")
		if !restarted.Live || restarted.EndedAt != nil || restarted.ID != st.ID {
			t.Fatalf("restart = %+v", restarted)
		}
	}},
	{"tip moves money and records the tip", func(t *testing.T, b bundle) {
		ctx := t.Context()
		st := mustStart(t, b.s, "creator", "creator", "")
		mustCredit(t, b.s, "fan", 500, "pi_1")
		tip, err := b.s.Tip(ctx, store.TipRequest{TipperID: "fan", StreamID: st.ID, Amount: 120, IdempotencyKey: "k1"})
		if err != nil {
			t.Fatal(err)
		}
		if tip.Replayed || tip.ID <= 0 || tip.Amount != 120 || tip.CreatorID != "creator" || tip.TipperID != "fan" || tip.StreamID != st.ID || tip.CreatedAt.IsZero() {
			t.Fatalf("tip = %+v", tip)
		}
		wantBalance(t, b.s, "fan", 380)
		wantBalance(t, b.s, "creator", 120)
		wantStats(t, b.s, "creator", store.TipStats{Count: 1, Sum: 120})
	}},
	{"same key replays the original tip and moves nothing", func(t *testing.T, b bundle) {
		ctx := t.Context()
		st := mustStart(t, b.s, "creator", "creator", "")
		mustCredit(t, b.s, "fan", 500, "pi_1")
		req := store.TipRequest{TipperID: "fan", StreamID: st.ID, Amount: 100, IdempotencyKey: "k1"}
		first, err := b.s.Tip(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		// Replays win over every other check: even after the stream ended.
		if _, err := b.s.StopStream(ctx, "creator", st.ID); err != nil {
			t.Fatal(err)
		}
		again, err := b.s.Tip(ctx, req)
		if err != nil || !again.Replayed || again.ID != first.ID || !again.CreatedAt.Equal(first.CreatedAt) {
			t.Fatalf("replay = %+v, %v; first %+v", again, err, first)
		}
		wantBalance(t, b.s, "fan", 400)
		wantStats(t, b.s, "creator", store.TipStats{Count: 1, Sum: 100})
	}},
	{"same key with other parameters is refused", func(t *testing.T, b bundle) {
		ctx := t.Context()
		st := mustStart(t, b.s, "creator", "creator", "")
		other := mustStart(t, b.s, "other", "othercreator", "")
		mustCredit(t, b.s, "fan", 500, "pi_1")
		if _, err := b.s.Tip(ctx, store.TipRequest{TipperID: "fan", StreamID: st.ID, Amount: 100, IdempotencyKey: "k1"}); err != nil {
			t.Fatal(err)
		}
		for _, req := range []store.TipRequest{
			{TipperID: "fan", StreamID: st.ID, Amount: 101, IdempotencyKey: "k1"},
			{TipperID: "fan", StreamID: other.ID, Amount: 100, IdempotencyKey: "k1"},
		} {
			if _, err := b.s.Tip(ctx, req); !errors.Is(err, store.ErrIdempotencyKeyReused) {
				t.Errorf("Tip(%+v) err = %v, want ErrIdempotencyKeyReused", req, err)
			}
		}
		wantBalance(t, b.s, "fan", 400)
	}},
	{"keys are scoped per tipper", func(t *testing.T, b bundle) {
		ctx := t.Context()
		st := mustStart(t, b.s, "creator", "creator", "")
		mustCredit(t, b.s, "fan1", 100, "pi_1")
		mustCredit(t, b.s, "fan2", 100, "pi_2")
		for _, fan := range []string{"fan1", "fan2"} {
			tip, err := b.s.Tip(ctx, store.TipRequest{TipperID: fan, StreamID: st.ID, Amount: 10, IdempotencyKey: "same"})
			if err != nil || tip.Replayed {
				t.Fatalf("%s tip = %+v, %v", fan, tip, err)
			}
		}
		wantBalance(t, b.s, "creator", 20)
	}},
	{"tip refusals write nothing", func(t *testing.T, b bundle) {
		ctx := t.Context()
		st := mustStart(t, b.s, "creator", "creator", "")
		ended := mustStart(t, b.s, "ended", "endedcreator", "")
		if _, err := b.s.StopStream(ctx, "ended", ended.ID); err != nil {
			t.Fatal(err)
		}
		mustCredit(t, b.s, "fan", 50, "pi_1")
		mustCredit(t, b.s, "creator", 50, "pi_2")
		cases := []struct {
			req  store.TipRequest
			want error
		}{
			{store.TipRequest{TipperID: "fan", StreamID: st.ID, Amount: 51, IdempotencyKey: "a"}, store.ErrInsufficientFunds},
			{store.TipRequest{TipperID: "broke", StreamID: st.ID, Amount: 1, IdempotencyKey: "a"}, store.ErrInsufficientFunds},
			{store.TipRequest{TipperID: "fan", StreamID: ended.ID, Amount: 1, IdempotencyKey: "b"}, store.ErrStreamNotLive},
			{store.TipRequest{TipperID: "creator", StreamID: st.ID, Amount: 1, IdempotencyKey: "c"}, store.ErrSelfTip},
			{store.TipRequest{TipperID: "fan", StreamID: st.ID + 1000, Amount: 1, IdempotencyKey: "d"}, store.ErrNotFound},
			{store.TipRequest{TipperID: "fan", StreamID: st.ID, Amount: 0, IdempotencyKey: "e"}, store.ErrInvalid},
			{store.TipRequest{TipperID: "fan", StreamID: st.ID, Amount: -5, IdempotencyKey: "e"}, store.ErrInvalid},
			{store.TipRequest{TipperID: "fan", StreamID: st.ID, Amount: maxTip + 1, IdempotencyKey: "e"}, store.ErrInvalid},
			{store.TipRequest{TipperID: "fan", StreamID: st.ID, Amount: 1, IdempotencyKey: ""}, store.ErrInvalid},
			{store.TipRequest{TipperID: "", StreamID: st.ID, Amount: 1, IdempotencyKey: "f"}, store.ErrInvalid},
			{store.TipRequest{TipperID: "fan", StreamID: 0, Amount: 1, IdempotencyKey: "f"}, store.ErrInvalid},
		}
		for _, c := range cases {
			if _, err := b.s.Tip(ctx, c.req); !errors.Is(err, c.want) {
				t.Errorf("Tip(%+v) err = %v, want %v", c.req, err, c.want)
			}
		}
		wantBalance(t, b.s, "fan", 50)
		wantBalance(t, b.s, "creator", 50)
		wantStats(t, b.s, "creator", store.TipStats{})
		// A refused key is not burnt: once funded, the same key pays.
		mustCredit(t, b.s, "fan", 10, "pi_3")
		tip, err := b.s.Tip(ctx, store.TipRequest{TipperID: "fan", StreamID: st.ID, Amount: 51, IdempotencyKey: "a"})
		if err != nil || tip.Replayed {
			t.Fatalf("tip after top-up = %+v, %v", tip, err)
		}
	}},
	{"a new key cannot spend an old key's money", func(t *testing.T, b bundle) {
		// What survives a Redis flush: the key is forgotten upstream, so the
		// client sends a fresh one; the balance is still the guard.
		ctx := t.Context()
		st := mustStart(t, b.s, "creator", "creator", "")
		mustCredit(t, b.s, "fan", 100, "pi_1")
		if _, err := b.s.Tip(ctx, store.TipRequest{TipperID: "fan", StreamID: st.ID, Amount: 100, IdempotencyKey: "old"}); err != nil {
			t.Fatal(err)
		}
		if _, err := b.s.Tip(ctx, store.TipRequest{TipperID: "fan", StreamID: st.ID, Amount: 100, IdempotencyKey: "new"}); !errors.Is(err, store.ErrInsufficientFunds) {
			t.Fatalf("new key err = %v, want ErrInsufficientFunds", err)
		}
		if tip, err := b.s.Tip(ctx, store.TipRequest{TipperID: "fan", StreamID: st.ID, Amount: 100, IdempotencyKey: "old"}); err != nil || !tip.Replayed {
			t.Fatalf("old key again = %+v, %v", tip, err)
		}
		wantBalance(t, b.s, "fan", 0)
		wantBalance(t, b.s, "creator", 100)
	}},
	{"20 concurrent identical tips debit once", func(t *testing.T, b bundle) {
		st := mustStart(t, b.s, "creator", "creator", "")
		mustCredit(t, b.s, "fan", 1000, "pi_1")
		req := store.TipRequest{TipperID: "fan", StreamID: st.ID, Amount: 300, IdempotencyKey: "k"}
		tips, errs := concurrently(20, func(int) (store.Tip, error) { return b.s.Tip(context.Background(), req) })
		fresh := 0
		for i, err := range errs {
			if err != nil {
				t.Fatalf("tip %d: %v", i, err)
			}
			if !tips[i].Replayed {
				fresh++
			}
			if tips[i].ID != tips[0].ID {
				t.Fatalf("tip %d has id %d, tip 0 has %d", i, tips[i].ID, tips[0].ID)
			}
		}
		if fresh != 1 {
			t.Fatalf("%d tips were not replays, want exactly 1", fresh)
		}
		wantBalance(t, b.s, "fan", 700)
		wantBalance(t, b.s, "creator", 300)
		wantStats(t, b.s, "creator", store.TipStats{Count: 1, Sum: 300})
	}},
	{"20 concurrent tips with new keys never overdraw", func(t *testing.T, b bundle) {
		st := mustStart(t, b.s, "creator", "creator", "")
		mustCredit(t, b.s, "fan", 500, "pi_1")
		_, errs := concurrently(20, func(i int) (store.Tip, error) {
			return b.s.Tip(context.Background(), store.TipRequest{TipperID: "fan", StreamID: st.ID, Amount: 100, IdempotencyKey: fmt.Sprint("k", i)})
		})
		ok := 0
		for _, err := range errs {
			switch {
			case err == nil:
				ok++
			case !errors.Is(err, store.ErrInsufficientFunds):
				t.Fatalf("unexpected error: %v", err)
			}
		}
		if ok != 5 {
			t.Fatalf("%d tips paid, want 5", ok)
		}
		wantBalance(t, b.s, "fan", 0)
		wantStats(t, b.s, "creator", store.TipStats{Count: 5, Sum: 500})
	}},
	{"opposite tips at once do not deadlock", func(t *testing.T, b bundle) {
		a := mustStart(t, b.s, "a", "creator_a", "")
		bb := mustStart(t, b.s, "b", "creator_b", "")
		mustCredit(t, b.s, "a", 1000, "pi_a")
		mustCredit(t, b.s, "b", 1000, "pi_b")
		_, errs := concurrently(20, func(i int) (store.Tip, error) {
			from, to := "a", bb.ID
			if i%2 == 1 {
				from, to = "b", a.ID
			}
			return b.s.Tip(context.Background(), store.TipRequest{TipperID: from, StreamID: to, Amount: 10, IdempotencyKey: fmt.Sprint("k", i)})
		})
		for _, err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		wantBalance(t, b.s, "a", 1000)
		wantBalance(t, b.s, "b", 1000)
	}},
	{"tips older than 30 days drop out of the stats", func(t *testing.T, b bundle) {
		ctx := t.Context()
		st := mustStart(t, b.s, "creator", "creator", "")
		mustCredit(t, b.s, "fan", 100, "pi_1")
		if _, err := b.s.Tip(ctx, store.TipRequest{TipperID: "fan", StreamID: st.ID, Amount: 30, IdempotencyKey: "old"}); err != nil {
			t.Fatal(err)
		}
		b.ageTips(t, 29*24*time.Hour)
		wantStats(t, b.s, "creator", store.TipStats{Count: 1, Sum: 30})
		b.ageTips(t, 2*24*time.Hour)
		if _, err := b.s.Tip(ctx, store.TipRequest{TipperID: "fan", StreamID: st.ID, Amount: 20, IdempotencyKey: "new"}); err != nil {
			t.Fatal(err)
		}
		wantStats(t, b.s, "creator", store.TipStats{Count: 1, Sum: 20})
		wantStats(t, b.s, "nobody", store.TipStats{})
	}},
	{"tipped creators are those of the last 30 days, newest first", func(t *testing.T, b bundle) {
		ctx := t.Context()
		old := mustStart(t, b.s, "old", "old_creator", "")
		x := mustStart(t, b.s, "x", "creator_x", "")
		y := mustStart(t, b.s, "y", "creator_y", "")
		mustCredit(t, b.s, "fan", 100, "pi_1")
		tip := func(st store.Stream, key string) {
			if _, err := b.s.Tip(ctx, store.TipRequest{TipperID: "fan", StreamID: st.ID, Amount: 1, IdempotencyKey: key}); err != nil {
				t.Fatal(err)
			}
		}
		tip(old, "1")
		b.ageTips(t, 31*24*time.Hour)
		tip(y, "2")
		b.ageTips(t, time.Hour)
		tip(x, "3")
		b.ageTips(t, time.Hour)
		tip(y, "4")
		for _, tt := range []struct {
			limit int
			want  []string
		}{{10, []string{"y", "x"}}, {1, []string{"y"}}, {0, []string{}}} {
			got, err := b.s.TippedCreators(ctx, tt.limit)
			if err != nil || !slices.Equal(got, tt.want) {
				t.Errorf("TippedCreators(%d) = %v, %v; want %v", tt.limit, got, err, tt.want)
			}
		}
	}},
	{"credit happens once per external reference", func(t *testing.T, b bundle) {
		ctx := t.Context()
		wantBalance(t, b.s, "fan", 0)
		first := mustCredit(t, b.s, "fan", 250, "pi_1")
		if first.Replayed || first.Kind != store.KindDeposit || first.UserID != "fan" || first.Amount != 250 || first.ExternalRef != "pi_1" || first.ID <= 0 {
			t.Fatalf("credit = %+v", first)
		}
		again, err := b.s.Credit(ctx, "fan", 250, "pi_1")
		if err != nil || !again.Replayed || again.ID != first.ID {
			t.Fatalf("repeat = %+v, %v", again, err)
		}
		for _, c := range []struct {
			user   string
			amount int64
		}{{"fan", 251}, {"other", 250}} {
			if _, err := b.s.Credit(ctx, c.user, c.amount, "pi_1"); !errors.Is(err, store.ErrIdempotencyKeyReused) {
				t.Errorf("Credit(%s, %d, pi_1) err = %v, want ErrIdempotencyKeyReused", c.user, c.amount, err)
			}
		}
		for _, c := range []struct {
			user   string
			amount int64
			ref    string
		}{{"", 1, "pi_x"}, {"fan", 0, "pi_x"}, {"fan", -1, "pi_x"}, {"fan", store.MaxCreditAmount + 1, "pi_x"}, {"fan", 1, ""}} {
			if _, err := b.s.Credit(ctx, c.user, c.amount, c.ref); !errors.Is(err, store.ErrInvalid) {
				t.Errorf("Credit(%q, %d, %q) err = %v, want ErrInvalid", c.user, c.amount, c.ref, err)
			}
		}
		wantBalance(t, b.s, "fan", 250)
		wantBalance(t, b.s, "other", 0)
	}},
	{"20 concurrent credits with one reference credit once", func(t *testing.T, b bundle) {
		trs, errs := concurrently(20, func(int) (store.Transfer, error) { return b.s.Credit(context.Background(), "fan", 70, "pi_1") })
		fresh := 0
		for i, err := range errs {
			if err != nil {
				t.Fatal(err)
			}
			if !trs[i].Replayed {
				fresh++
			}
		}
		if fresh != 1 {
			t.Fatalf("%d credits were not replays, want 1", fresh)
		}
		wantBalance(t, b.s, "fan", 70)
	}},
	{"seed demo is idempotent", func(t *testing.T, b bundle) {
		ctx := t.Context()
		for range 2 {
			st, d, err := store.SeedDemo(ctx, b.s, store.Demo{})
			if err != nil {
				t.Fatal(err)
			}
			if !st.Live || st.CreatorID != d.CreatorID || st.Username != d.Username {
				t.Fatalf("seeded stream = %+v", st)
			}
			wantBalance(t, b.s, d.FanID, d.FanBalance)
		}
	}},
	{"ping", func(t *testing.T, b bundle) {
		if err := b.s.Ping(t.Context()); err != nil {
			t.Fatal(err)
		}
	}},
}

func TestContract(t *testing.T) {
	t.Parallel()
	for _, im := range impls {
		t.Run(im.name, func(t *testing.T) {
			t.Parallel()
			for _, c := range slices.Concat(contract, refundContract) {
				t.Run(c.name, func(t *testing.T) {
					t.Parallel()
					c.run(t, im.new(t))
				})
			}
		})
	}
}

func mustStart(t *testing.T, s store.Store, creator, username, title string) store.Stream {
	t.Helper()
	st, err := s.StartStream(t.Context(), store.StartStreamRequest{CreatorID: creator, Username: username, Title: title})
	if err != nil {
		t.Fatalf("StartStream(%s, %s): %v", creator, username, err)
	}
	return st
}

func mustCredit(t *testing.T, s store.Store, user string, amount int64, ref string) store.Transfer {
	t.Helper()
	tr, err := s.Credit(t.Context(), user, amount, ref)
	if err != nil {
		t.Fatalf("Credit(%s, %d, %s): %v", user, amount, ref, err)
	}
	return tr
}

func wantBalance(t *testing.T, s store.Store, user string, want int64) {
	t.Helper()
	got, err := s.Balance(t.Context(), user)
	if err != nil || got != want {
		t.Fatalf("Balance(%s) = %d, %v; want %d", user, got, err, want)
	}
}

func wantStats(t *testing.T, s store.Store, creator string, want store.TipStats) {
	t.Helper()
	got, err := s.TipsLast30Days(t.Context(), creator)
	if err != nil || got != want {
		t.Fatalf("TipsLast30Days(%s) = %+v, %v; want %+v", creator, got, err, want)
	}
}

// concurrently runs f n times at once (released together by one channel)
// and returns the results in call order.
func concurrently[T any](n int, f func(i int) (T, error)) ([]T, []error) {
	out, errs := make([]T, n), make([]error, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			out[i], errs[i] = f(i)
		}()
	}
	close(start)
	wg.Wait()
	return out, errs
}
