package store

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"
)

// Memory is a Store held in process memory, for the one-command local stack
// only: nothing survives a restart and replicas do not share it. It passes
// the same contract tests as Postgres; one mutex makes every call atomic,
// which is what a database transaction gives the real store.
type Memory struct {
	maxTip int64
	log    *slog.Logger
	now    func() time.Time

	mu        sync.Mutex
	streams   map[int64]*Stream
	usernames map[string]int64
	balances  map[string]int64
	system    int64                     // the stripe/deposits account: minus what users hold
	tips      map[tipKey]*Tip           // by (tipper, idempotency key)
	tipList   []*Tip                    // in order, for the 30-day sums
	deposits  map[string]*memDeposit    // by external ref
	refunds   map[string]*memRefund     // by payment ref
	failures  map[string]*RefundFailure // by refund ref
	nextID    int64
}

// memDeposit is a deposit and the tokens reversed from it so far.
type memDeposit struct {
	Transfer
	reversed int64
}

// memRefund is the stripe_refunds row.
type memRefund struct {
	refundFacts
	shortfall   int64
	shortfallAt time.Time
	createdAt   time.Time
}

type tipKey struct{ tipper, key string }

var _ Store = (*Memory)(nil)

// NewMemory returns an empty in-memory store.
func NewMemory(opts Options) (*Memory, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	opts = opts.withDefaults()
	return &Memory{
		maxTip:    opts.MaxTipAmount,
		log:       opts.Logger,
		now:       opts.Now,
		streams:   map[int64]*Stream{},
		usernames: map[string]int64{},
		balances:  map[string]int64{},
		tips:      map[tipKey]*Tip{},
		deposits:  map[string]*memDeposit{},
		refunds:   map[string]*memRefund{},
		failures:  map[string]*RefundFailure{},
	}, nil
}

func (m *Memory) id() int64 { m.nextID++; return m.nextID }

// Ping implements Store.
func (m *Memory) Ping(ctx context.Context) error { return ctx.Err() }

// copyStream returns a snapshot the caller may keep.
func copyStream(st *Stream) Stream {
	out := *st
	if st.StartedAt != nil {
		t := *st.StartedAt
		out.StartedAt = &t
	}
	if st.EndedAt != nil {
		t := *st.EndedAt
		out.EndedAt = &t
	}
	return out
}

// StreamByUsername implements Store.
func (m *Memory) StreamByUsername(ctx context.Context, username string) (Stream, error) {
	if err := ctx.Err(); err != nil {
		return Stream{}, err
	}
	u, err := NormalizeUsername(username)
	if err != nil {
		return Stream{}, ErrNotFound
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	id, ok := m.usernames[u]
	if !ok {
		return Stream{}, ErrNotFound
	}
	return copyStream(m.streams[id]), nil
}

// StreamByID implements Store.
func (m *Memory) StreamByID(ctx context.Context, id int64) (Stream, error) {
	if err := ctx.Err(); err != nil {
		return Stream{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	st, ok := m.streams[id]
	if !ok {
		return Stream{}, ErrNotFound
	}
	return copyStream(st), nil
}

// StartStream implements Store.
func (m *Memory) StartStream(ctx context.Context, req StartStreamRequest) (Stream, error) {
	if err := ctx.Err(); err != nil {
		return Stream{}, err
	}
	req, err := checkStart(req)
	if err != nil {
		return Stream{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	id, ok := m.usernames[req.Username]
	if !ok {
		st := &Stream{ID: m.id(), CreatorID: req.CreatorID, Username: req.Username, Title: req.Title, Live: true, StartedAt: &now}
		m.streams[st.ID] = st
		m.usernames[st.Username] = st.ID
		return copyStream(st), nil
	}
	st := m.streams[id]
	if st.CreatorID != req.CreatorID {
		return Stream{}, ErrNotCreator
	}
	st.Title = req.Title
	if !st.Live {
		st.Live, st.StartedAt, st.Viewers = true, &now, 0
	}
	st.EndedAt = nil
	return copyStream(st), nil
}

// StopStream implements Store.
func (m *Memory) StopStream(ctx context.Context, creatorID string, streamID int64) (Stream, error) {
	if err := checkID("creator id", creatorID); err != nil {
		return Stream{}, err
	}
	if err := ctx.Err(); err != nil {
		return Stream{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	st, ok := m.streams[streamID]
	if !ok {
		return Stream{}, ErrNotFound
	}
	if st.CreatorID != creatorID {
		return Stream{}, ErrNotCreator
	}
	if st.Live {
		now := m.now()
		st.Live, st.Viewers, st.EndedAt = false, 0, &now
	}
	return copyStream(st), nil
}

// Tip implements Store.
func (m *Memory) Tip(ctx context.Context, req TipRequest) (Tip, error) {
	if err := ctx.Err(); err != nil {
		return Tip{}, err
	}
	if err := checkTip(req, m.maxTip); err != nil {
		return Tip{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if t, ok := m.tips[tipKey{req.TipperID, req.IdempotencyKey}]; ok {
		if !sameTip(*t, req) {
			return Tip{}, ErrIdempotencyKeyReused
		}
		out := *t
		out.Replayed = true
		return out, nil
	}
	st, ok := m.streams[req.StreamID]
	switch {
	case !ok:
		return Tip{}, ErrNotFound
	case !st.Live:
		return Tip{}, ErrStreamNotLive
	case st.CreatorID == req.TipperID:
		return Tip{}, ErrSelfTip
	case m.balances[req.TipperID] < req.Amount:
		return Tip{}, ErrInsufficientFunds
	}
	m.balances[req.TipperID] -= req.Amount
	m.balances[st.CreatorID] += req.Amount
	t := &Tip{ID: m.id(), StreamID: st.ID, TipperID: req.TipperID, CreatorID: st.CreatorID,
		Amount: req.Amount, IdempotencyKey: req.IdempotencyKey, CreatedAt: m.now()}
	m.tips[tipKey{req.TipperID, req.IdempotencyKey}] = t
	m.tipList = append(m.tipList, t)
	return *t, nil
}

// Balance implements Store.
func (m *Memory) Balance(ctx context.Context, userID string) (int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.balances[userID], nil
}

// Credit implements Store.
func (m *Memory) Credit(ctx context.Context, userID string, amount int64, externalRef string) (Transfer, error) {
	if err := ctx.Err(); err != nil {
		return Transfer{}, err
	}
	if err := checkCredit(userID, amount, externalRef); err != nil {
		return Transfer{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if d, ok := m.deposits[externalRef]; ok {
		if d.UserID != userID || d.Amount != amount {
			return Transfer{}, ErrIdempotencyKeyReused
		}
		out := d.Transfer
		out.Replayed = true
		return out, nil
	}
	d := &memDeposit{Transfer: Transfer{ID: m.id(), Kind: KindDeposit, UserID: userID, Amount: amount, ExternalRef: externalRef, CreatedAt: m.now()}}
	m.deposits[externalRef] = d
	m.move(userID, amount)
	out := d.Transfer
	if rf, ok := m.refunds[externalRef]; ok {
		if t := rf.target(amount); t > 0 {
			m.id() // the reversal's transaction
			d.reversed = t
			m.move(userID, -t)
			out.Reversed = t
		}
	}
	return out, nil
}

// move credits (or, negative, debits) a user from the system account.
func (m *Memory) move(userID string, amount int64) {
	m.balances[userID] += amount
	m.system -= amount
}

// ApplyRefund implements Store.
func (m *Memory) ApplyRefund(ctx context.Context, r Refund) (RefundResult, error) {
	if err := ctx.Err(); err != nil {
		return RefundResult{}, err
	}
	if err := checkRefund(r); err != nil {
		return RefundResult{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	row, ok := m.refunds[r.PaymentRef]
	if !ok {
		row = &memRefund{createdAt: m.now()}
	}
	facts, changed, err := row.merge(r)
	if err != nil {
		return RefundResult{}, err
	}
	if changed {
		row.refundFacts = facts
		m.refunds[r.PaymentRef] = row
	}
	dep, found := m.deposits[r.PaymentRef]
	res := RefundResult{State: m.refundState(r.PaymentRef, row, true, dep, found)}
	owed := res.State.Target - res.State.Reversed - res.State.Shortfall
	switch {
	case !found && changed:
		res.Outcome = RefundPending
		return res, nil
	case owed <= 0:
		res.Outcome = RefundUnchanged
		return res, nil
	}
	res.Reversed = min(owed, m.balances[dep.UserID])
	res.Shortfall = owed - res.Reversed
	if res.Reversed > 0 {
		res.TransactionID = m.id()
		dep.reversed += res.Reversed
		m.move(dep.UserID, -res.Reversed)
	}
	res.Outcome = RefundReversed
	if res.Shortfall > 0 {
		if row.shortfall == 0 {
			row.shortfallAt = m.now()
		}
		row.shortfall += res.Shortfall
		res.Outcome = RefundShortfall
	}
	res.State.Reversed, res.State.Shortfall = dep.reversed, row.shortfall
	return res, nil
}

func (m *Memory) refundState(ref string, row *memRefund, recorded bool, dep *memDeposit, found bool) RefundState {
	var d deposit
	if found {
		d = deposit{Transfer: dep.Transfer, reversed: dep.reversed}
	}
	return refundState(ref, recorded, row.refundFacts, row.shortfall, d, found)
}

// RefundState implements Store.
func (m *Memory) RefundState(ctx context.Context, paymentRef string) (RefundState, error) {
	if err := ctx.Err(); err != nil {
		return RefundState{}, err
	}
	if err := checkID("payment reference", paymentRef); err != nil {
		return RefundState{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	row, recorded := m.refunds[paymentRef]
	if !recorded {
		row = &memRefund{}
	}
	dep, found := m.deposits[paymentRef]
	return m.refundState(paymentRef, row, recorded, dep, found), nil
}

// RecordRefundFailure implements Store.
func (m *Memory) RecordRefundFailure(ctx context.Context, f RefundFailure) (RefundFailure, error) {
	if err := ctx.Err(); err != nil {
		return RefundFailure{}, err
	}
	if err := checkRefundFailure(f); err != nil {
		return RefundFailure{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if old, ok := m.failures[f.RefundRef]; ok {
		if old.PaymentRef != f.PaymentRef {
			return RefundFailure{}, fmt.Errorf("%w: the refund was recorded for another payment", ErrIdempotencyKeyReused)
		}
		out := *old
		out.Replayed = true
		return out, nil
	}
	f.CreatedAt, f.Replayed = m.now(), false
	m.failures[f.RefundRef] = &f
	return f, nil
}

// RefundExceptions implements Store.
func (m *Memory) RefundExceptions(ctx context.Context, limit int) ([]RefundException, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if limit <= 0 {
		limit = DefaultExceptionsLimit
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []RefundException
	for ref, row := range m.refunds {
		dep, found := m.deposits[ref]
		switch {
		case !found:
			out = append(out, RefundException{Kind: ExceptionPending, PaymentRef: ref, Amount: row.AmountRefunded, Since: row.createdAt})
		case row.shortfall > 0:
			out = append(out, RefundException{Kind: ExceptionShortfall, PaymentRef: ref, UserID: dep.UserID, Tokens: row.shortfall, Since: row.shortfallAt})
		}
	}
	for _, f := range m.failures {
		e := RefundException{Kind: "refund_" + f.Status, PaymentRef: f.PaymentRef, RefundRef: f.RefundRef, Amount: f.Amount, Since: f.CreatedAt}
		if dep, ok := m.deposits[f.PaymentRef]; ok {
			e.UserID = dep.UserID
		}
		out = append(out, e)
	}
	// The order of the view's ORDER BY.
	slices.SortFunc(out, func(a, b RefundException) int {
		return cmp.Or(a.Since.Compare(b.Since), cmp.Compare(a.Kind, b.Kind),
			cmp.Compare(a.PaymentRef, b.PaymentRef), cmp.Compare(a.RefundRef, b.RefundRef))
	})
	if len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}

// TippedCreators implements Store.
func (m *Memory) TippedCreators(ctx context.Context, limit int) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	since := m.now().Add(-tipWindow)
	last := map[string]time.Time{}
	for _, t := range m.tipList {
		if t.CreatedAt.After(since) && t.CreatedAt.After(last[t.CreatorID]) {
			last[t.CreatorID] = t.CreatedAt
		}
	}
	out := make([]string, 0, len(last))
	for id := range last {
		out = append(out, id)
	}
	slices.SortFunc(out, func(a, b string) int {
		if c := last[b].Compare(last[a]); c != 0 {
			return c
		}
		return cmp.Compare(a, b)
	})
	return out[:max(0, min(limit, len(out)))], nil
}

// TipsLast30Days implements Store.
func (m *Memory) TipsLast30Days(ctx context.Context, creatorID string) (TipStats, error) {
	if err := checkID("creator id", creatorID); err != nil {
		return TipStats{}, err
	}
	if err := ctx.Err(); err != nil {
		return TipStats{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	since := m.now().Add(-tipWindow)
	var st TipStats
	for _, t := range m.tipList {
		if t.CreatorID == creatorID && t.CreatedAt.After(since) {
			st.Count++
			st.Sum += t.Amount
		}
	}
	return st, nil
}
