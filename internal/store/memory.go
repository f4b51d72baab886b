package store

import (
	"context"
	"log/slog"
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
	system    int64                // the stripe/deposits account: minus what users hold
	tips      map[tipKey]*Tip      // by (tipper, idempotency key)
	tipList   []*Tip               // in order, for the 30-day sums
	deposits  map[string]*Transfer // by external ref
	reversals map[string]*Transfer // by the deposit's external ref
	nextID    int64
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
		deposits:  map[string]*Transfer{},
		reversals: map[string]*Transfer{},
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
		out := *d
		out.Replayed = true
		return out, nil
	}
	d := &Transfer{ID: m.id(), Kind: KindDeposit, UserID: userID, Amount: amount, ExternalRef: externalRef, CreatedAt: m.now()}
	m.deposits[externalRef] = d
	m.balances[userID] += amount
	m.system -= amount
	return *d, nil
}

// Reverse implements Store.
func (m *Memory) Reverse(ctx context.Context, externalRef string) (Transfer, error) {
	if err := ctx.Err(); err != nil {
		return Transfer{}, err
	}
	if err := checkID("external reference", externalRef); err != nil {
		return Transfer{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	d, ok := m.deposits[externalRef]
	if !ok {
		return Transfer{}, ErrNotFound
	}
	if r, ok := m.reversals[externalRef]; ok {
		out := *r
		out.Replayed = true
		return out, nil
	}
	if m.balances[d.UserID] < d.Amount {
		return Transfer{}, ErrInsufficientFunds
	}
	r := &Transfer{ID: m.id(), Kind: KindReversal, UserID: d.UserID, Amount: d.Amount, ExternalRef: externalRef, CreatedAt: m.now()}
	m.reversals[externalRef] = r
	m.balances[d.UserID] -= d.Amount
	m.system += d.Amount
	return *r, nil
}

// TipsLast30Days implements Store.
func (m *Memory) TipsLast30Days(ctx context.Context, creatorID string) (TipStats, error) {
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
