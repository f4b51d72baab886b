package idempotency

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
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
	// validUntil is when the lease lapses unless renewed, on this host's
	// monotonic clock: the claim's expiry at first, then LeaseTTL after each
	// renewal was sent.
	validUntil time.Time

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
	n, err := l.store.call(ctx, renewScript, l.key, l.token, l.store.leaseMS)
	if err != nil {
		return err
	}
	if n == 0 {
		return ErrLeaseLost
	}
	return nil
}

// KeepAlive renews the lease until stop is called or the lease is completed
// or released: first halfway through the claim's short expiry (see
// StoreConfig.ClaimGrace; work that ends sooner costs no renewal), then
// every LeaseTTL/3. Work that may outlive the claim window must run under
// KeepAlive, or another caller can claim the key while it runs. Renewal deliberately ignores ctx's
// cancellation: a handler still running after its client went away must keep
// the key, or a retry would run the work a second time.
//
// The returned context derives from ctx and is cancelled with cause
// ErrLeaseLost (see context.Cause) when the lease is lost: the owner check
// failed, or no renewal succeeded for a whole LeaseTTL (Redis unreachable),
// after which another caller may claim the key. Run the work under it.
//
// stop ends renewal, cancels the returned context and reports ErrLeaseLost
// if the lease was lost at any point; it is idempotent. When it returns, no
// renewal is in flight any more, so a following Complete or Release never
// races one.
func (l *Lease) KeepAlive(ctx context.Context) (context.Context, func() error) {
	kctx, cancel := context.WithCancelCause(ctx)
	l.mu.Lock()
	valid := l.validUntil
	l.mu.Unlock()
	k := &keepAlive{lease: l, cancel: cancel, validUntil: valid}
	// A timer instead of a goroutine + ticker per lease: most work ends
	// long before the first renewal is due, and then nothing but this
	// timer was ever created (measured on the worker's delivery path).
	k.mu.Lock()
	k.timer = time.AfterFunc(k.nextRenewal(time.Now(), time.Now()), k.renew)
	k.mu.Unlock()
	l.mu.Lock()
	prev := l.keep
	l.keep = k
	l.mu.Unlock()
	if prev != nil {
		_ = prev.stop()
	}
	return kctx, k.stop
}

// Complete stores value as the key's result for ResultTTL and ends the lease
// (stopping KeepAlive). A record another owner holds or finished is never
// overwritten: that returns ErrLeaseLost. If the lease merely expired and
// nobody claimed the key since, the record is still written.
//
// When Redis does not answer (ErrUnavailable), the store keeps trying in the
// background for a while, so the record is still written once Redis is
// back (see Store.Close).
func (l *Lease) Complete(ctx context.Context, value []byte) error {
	l.stopKeepAlive()
	n, err := l.store.call(ctx, completeScript, l.key, l.token, l.fingerprint, value, l.store.resultMS)
	if err != nil {
		l.store.cleanup.add(cleanupTask{op: opComplete, key: l.key, token: l.token, fingerprint: l.fingerprint,
			value: append([]byte(nil), value...), until: time.Now().Add(completeRetryFor)})
		return err
	}
	if n == 0 {
		return ErrLeaseLost
	}
	return nil
}

// CompleteAsync is Complete without waiting for Redis: the done record is
// written with the store's next round trip (it leaves in front of the next
// Acquire or other call through this store, so a later Acquire of the key
// through this store always finds it), or on its own within a couple of
// milliseconds when no other call comes. Under load that makes finishing
// free of a round trip of its own. done, if not nil, is called with what
// Complete would have returned, from the goroutine that got Redis's reply;
// a failure is retried in the background exactly as Complete's is, and
// Store.Close waits for writes still on their way.
//
// Until the record lands, another store (another process) that Acquires
// the key finds the lease and answers "in progress": use CompleteAsync
// where that answer means "try later" (a QStash redelivery), not where a
// caller must see the result the moment this returns.
func (l *Lease) CompleteAsync(value []byte, done func(error)) {
	l.stopKeepAlive()
	value = append([]byte(nil), value...)
	l.store.batch.Defer(completeScript, []string{l.key},
		[]any{l.token, l.fingerprint, value, l.store.resultMS},
		func(cmd *redis.Cmd) {
			n, err := cmd.Int64()
			switch {
			case err != nil:
				err = unavailable(err)
				l.store.cleanup.add(cleanupTask{op: opComplete, key: l.key, token: l.token, fingerprint: l.fingerprint,
					value: value, until: time.Now().Add(completeRetryFor)})
			case n == 0:
				err = ErrLeaseLost
			}
			if done != nil {
				done(err)
			}
		})
}

// Release frees the key so the next attempt runs the work, and ends the
// lease (stopping KeepAlive). It deletes the record only while the caller
// still owns it (compare-and-delete); otherwise it changes nothing and
// returns ErrLeaseLost, which callers usually just log.
//
// When Redis does not answer (ErrUnavailable), the store keeps trying in the
// background until the lease would have expired anyway, and a later Acquire
// of the key through this store takes the lease over.
func (l *Lease) Release(ctx context.Context) error {
	l.stopKeepAlive()
	n, err := l.store.call(ctx, releaseScript, l.key, l.token)
	if err != nil {
		l.mu.Lock()
		until := l.validUntil
		l.mu.Unlock()
		l.store.cleanup.add(cleanupTask{op: opRelease, key: l.key, token: l.token, fingerprint: l.fingerprint, until: until})
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
	lease  *Lease
	cancel context.CancelCauseFunc

	// mu is held for a whole renewal, so stop waits for one in flight.
	mu         sync.Mutex
	timer      *time.Timer
	stopped    bool
	lost       error
	validUntil time.Time // the lease is known to last until then
}

// nextRenewal is the wait before the next renewal attempt: a third of a
// lease after the last attempt was sent, but never later than halfway
// through what is left of the lease (the short claim at first).
func (k *keepAlive) nextRenewal(now, sent time.Time) time.Duration {
	ttl := k.lease.store.cfg.LeaseTTL
	return max(0, min(ttl/3-now.Sub(sent), k.validUntil.Sub(now)/2))
}

func (k *keepAlive) stop() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if !k.stopped {
		k.stopped = true
		k.timer.Stop()
		k.cancel(context.Canceled)
	}
	return k.lost
}

// renew runs on the timer's goroutine and re-arms the timer until the lease
// is stopped or lost.
func (k *keepAlive) renew() {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.stopped {
		return
	}
	ttl := k.lease.store.cfg.LeaseTTL
	// The new validity counts from before the renewal was sent.
	sent := time.Now()
	err := k.lease.Renew(context.Background())
	switch {
	case err == nil:
		k.validUntil = sent.Add(ttl)
		k.lease.mu.Lock()
		k.lease.validUntil = k.validUntil
		k.lease.mu.Unlock()
	case errors.Is(err, ErrLeaseLost):
		k.lost = ErrLeaseLost
	case !time.Now().Before(k.validUntil):
		k.lost = fmt.Errorf("%w: not renewed before it expired: %w", ErrLeaseLost, err)
	}
	if k.lost != nil {
		k.stopped = true
		k.cancel(k.lost)
		return
	}
	// Transient errors keep trying while the lease is still valid. The next
	// attempt is due a third of a lease after this one started, as with a
	// ticker, so a slow renewal does not push the following one towards
	// expiry.
	k.timer.Reset(k.nextRenewal(time.Now(), sent))
}
