package store

import (
	"context"
	"fmt"
)

// Demo describes the data the local stack starts with.
type Demo struct {
	// CreatorID owns a live stream. Defaults to "demo-creator".
	CreatorID string
	// Username of the stream. Defaults to "democreator".
	Username string
	// Title of the stream. Defaults to "Demo stream".
	Title string
	// FanID gets a wallet balance to tip with. Defaults to "demo-fan".
	FanID string
	// FanBalance is credited to the fan once. Defaults to 10000 tokens.
	FanBalance int64
}

func (d Demo) withDefaults() Demo {
	if d.CreatorID == "" {
		d.CreatorID = "demo-creator"
	}
	if d.Username == "" {
		d.Username = "democreator"
	}
	if d.Title == "" {
		d.Title = "Demo stream"
	}
	if d.FanID == "" {
		d.FanID = "demo-fan"
	}
	if d.FanBalance == 0 {
		d.FanBalance = 10_000
	}
	return d
}

// SeedDemo gives the local stack a creator with a live stream and a fan
// with a balance. It is idempotent: the fan's credit has the external
// reference "seed:<fan id>", so a restart on a persistent database does not
// credit again. It returns the live stream and the filled-in Demo.
func SeedDemo(ctx context.Context, s Store, d Demo) (Stream, Demo, error) {
	d = d.withDefaults()
	st, err := s.StartStream(ctx, StartStreamRequest{CreatorID: d.CreatorID, Username: d.Username, Title: d.Title})
	if err != nil {
		return Stream{}, d, fmt.Errorf("store: seed stream: %w", err)
	}
	if _, err := s.Credit(ctx, d.FanID, d.FanBalance, "seed:"+d.FanID); err != nil {
		return Stream{}, d, fmt.Errorf("store: seed fan balance: %w", err)
	}
	return st, d, nil
}
