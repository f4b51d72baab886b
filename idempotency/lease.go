package idempotency

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Lease is the right to run the work for one key. Exactly one caller holds
// it at a time; it ends with Complete (the result is stored and replayed) or
// Release (the key is free again so a retry can run). A Lease is safe for
// concurrent use.
type Lease struct {
	store       *Store
	key         string
	token       string
	fingerprint string

	mu   sync.Mutex
	keep *keepAlive
}

// Key is the Redis key of the record (prefix and namespace included).
func (l *Lease) Key() string { return l.key }

// Token is the owner token: random, unique per Acquire. It doubles as a
// fencing value a handler may pass to systems that can check it.
func (l *Lease) Token() string { return l.token }

// Renew extends the lease by LeaseTTL. It returns ErrLeaseLost if the caller
// no longer owns the key and ErrUnavailable if Redis did not answer.
func (l *Lease) Renew(ctx context.Context) error {
	n, err := l.store.call(ctx, renewScript, l.key, l.token, l.store.cfg.LeaseTTL.Milliseconds())
	if err != nil {
		return err
	}
	if n == 0 {
		return ErrLeaseLost
	}
	return nil
}

// KeepAlive renews the lease every LeaseTTL/3 in a goroutine until stop is
// called or the lease is completed or released. Renewal deliberately ignores
// ctx's cancellation: a handler still running after its client went away
// must keep the key, or a retry would run the work a second time.
//
// The returned context derives from ctx and is cancelled with cause
// ErrLeaseLost (see context.Cause) when the lease is lost: the owner check
// failed, or no renewal succeeded for a whole LeaseTTL (Redis unreachable),
// after which another caller may claim the key. Run the work under it.
//
// stop ends renewal, cancels the returned context and reports ErrLeaseLost
// if the lease was lost at any point; it is idempotent.
func (l *Lease) KeepAlive(ctx context.Context) (context.Context, func() error) {
	kctx, cancel := context.WithCancelCause(ctx)
	k := &keepAlive{stopCh: make(chan struct{}), done: make(chan struct{}), cancel: cancel}
	l.mu.Lock()
	prev := l.keep
	l.keep = k
	l.mu.Unlock()
	if prev != nil {
		_ = prev.stop()
	}
	go k.run(l)
	return kctx, k.stop
}

// Complete stores value as the key's result for ResultTTL and ends the lease
// (stopping KeepAlive). A record another owner holds or finished is never
// overwritten: that returns ErrLeaseLost. If the lease merely expired and
// nobody claimed the key since, the record is still written.
func (l *Lease) Complete(ctx context.Context, value []byte) error {
	l.stopKeepAlive()
	n, err := l.store.call(ctx, completeScript, l.key, l.token, l.fingerprint, value, l.store.cfg.ResultTTL.Milliseconds())
	if err != nil {
		return err
	}
	if n == 0 {
		return ErrLeaseLost
	}
	return nil
}

// Release frees the key so the next attempt runs the work, and ends the
// lease (stopping KeepAlive). It deletes the record only while the caller
// still owns it (compare-and-delete); otherwise it changes nothing and
// returns ErrLeaseLost, which callers usually just log.
func (l *Lease) Release(ctx context.Context) error {
	l.stopKeepAlive()
	n, err := l.store.call(ctx, releaseScript, l.key, l.token)
	if err != nil {
		return err
	}
	if n == 0 {
		return ErrLeaseLost
	}
	return nil
}

func (l *Lease) stopKeepAlive() {
	l.mu.Lock()
	k := l.keep
	l.mu.Unlock()
	if k != nil {
		_ = k.stop()
	}
}

type keepAlive struct {
	stopCh chan struct{}
	done   chan struct{}
	cancel context.CancelCauseFunc
	once   sync.Once
	lost   error // written by run before done is closed
}

func (k *keepAlive) stop() error {
	k.once.Do(func() {
		close(k.stopCh)
		<-k.done
		k.cancel(context.Canceled)
	})
	return k.lost
}

func (k *keepAlive) run(l *Lease) {
	defer close(k.done)
	ttl := l.store.cfg.LeaseTTL
	t := time.NewTicker(ttl / 3)
	defer t.Stop()
	// The lease is known to last until validFrom+ttl: validFrom is taken
	// before each successful renewal was sent.
	validFrom := time.Now()
	for {
		select {
		case <-k.stopCh:
			return
		case <-t.C:
		}
		sent := time.Now()
		err := l.Renew(context.Background())
		switch {
		case err == nil:
			validFrom = sent
			continue
		case errors.Is(err, ErrLeaseLost):
			k.lost = ErrLeaseLost
		case time.Since(validFrom) >= ttl:
			k.lost = fmt.Errorf("%w: no renewal for %s: %w", ErrLeaseLost, ttl, err)
		default:
			continue // transient: the lease is still valid, try again next tick
		}
		k.cancel(k.lost)
		return
	}
}
