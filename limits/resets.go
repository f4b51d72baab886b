package limits

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Resets reach every instance: Reset deletes the window's key and
// publishes the key on Prefix + ResetChannel; Listen, run by each instance,
// drops its block, lease and outage window for that key when the message
// arrives. A message published while an instance was disconnected is lost,
// so every (re)subscription empties that instance's whole local cache: its
// next decisions ask Redis. A round trip that was in flight when a reset
// arrived is answered but not remembered, so a window counted before the
// reset is not cached after it.

// ResetChannel is the Pub/Sub channel, after Config.Prefix, that carries
// resets to every instance's Listen.
const ResetChannel = "rl:reset"

// pubSub is what resets need of the client; go-redis's clients (single
// node and cluster) have it.
type pubSub interface {
	Publish(ctx context.Context, channel string, message any) *redis.IntCmd
	Subscribe(ctx context.Context, channels ...string) *redis.PubSub
}

// ErrNoPubSub: the Client given to New cannot publish or subscribe, so
// Listen cannot learn of other instances' resets.
var ErrNoPubSub = errors.New("limits: the client has no Pub/Sub")

// Listen applies the resets other instances (and jobctl limits reset)
// publish, until ctx ends; then it returns nil. Run it once per Limiter, in
// its own goroutine, for as long as the Limiter serves. Without it this
// instance keeps refusing a reset identifier (or admitting from its lease)
// until its cached window ends. Connection failures are retried with a
// backoff up to 5 s, and logged.
func (l *Limiter) Listen(ctx context.Context) error {
	ps, ok := l.client.(pubSub)
	if !ok {
		return ErrNoPubSub
	}
	sub := ps.Subscribe(ctx, l.resetChannel)
	// Receive does not watch ctx while it waits for a message; closing the
	// subscription is what ends the wait.
	stop := context.AfterFunc(ctx, func() { _ = sub.Close() })
	defer func() {
		stop()
		_ = sub.Close()
	}()
	wait := 100 * time.Millisecond
	for {
		msg, err := sub.Receive(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			l.logger.Warn("rate-limit reset listener: redis error; retrying", "error", err.Error(), "in", wait.String())
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(wait):
			}
			wait = min(2*wait, 5*time.Second)
			continue
		}
		switch m := msg.(type) {
		case *redis.Subscription:
			if m.Kind == "subscribe" {
				// (Re)subscribed: resets published meanwhile were missed.
				l.forgetAll()
				wait = 100 * time.Millisecond
			}
		case *redis.Message:
			if strings.HasPrefix(m.Payload, l.keyPrefix) {
				l.forget(m.Payload)
			}
		}
	}
}

// forget drops what this instance knows of one window.
func (l *Limiter) forget(key string) {
	l.resets.Add(1)
	l.cache.remove(key)
	l.fallback.remove(key)
}

// forgetAll drops every window this instance knows.
func (l *Limiter) forgetAll() {
	l.resets.Add(1)
	l.cache.clear()
	l.fallback.clear()
}

// publishReset tells the other instances; a client without Pub/Sub only
// resets Redis and this instance.
func (l *Limiter) publishReset(ctx context.Context, key string) error {
	ps, ok := l.client.(pubSub)
	if !ok {
		return nil
	}
	return ps.Publish(ctx, l.resetChannel, key).Err()
}
