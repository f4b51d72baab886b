package limits

import (
	"context"
	"time"

	"github.com/digis/jobworker/internal/scriptbatch"
)

// newBatcher sends concurrent decisions together (see internal/scriptbatch):
// at most cfg.MaxInFlight round trips are outstanding, decisions arriving
// while they are all busy leave together (at most cfg.MaxQueue wait; more
// are shed), and a lone caller is never delayed. On a client whose keys all
// live on one server a batch is one run of windowBatchScript, elsewhere (a
// cluster, a ring) a pipeline of windowScript runs; either way each
// decision is atomic on its own key and gets the answer it would get alone.
// Each round trip's deadline, cfg.Timeout, starts when it is sent.
func newBatcher(cfg Config, observe func(d time.Duration, err error)) *scriptbatch.Batcher {
	bc := scriptbatch.Config{
		MaxInFlight: cfg.MaxInFlight,
		MaxQueue:    cfg.MaxQueue,
		Timeout:     cfg.Timeout,
		Observe:     observe,
		Merge:       []scriptbatch.Merge{{Script: window, Keys: 1, Args: 4, Batch: windowBatch}},
	}
	if cfg.unmerged {
		bc.Merge = nil
	}
	return scriptbatch.New(cfg.Client, bc)
}

// decide runs the window script for one decision through the batcher. ctx
// is the caller's (its deadline bounds queue and round trip together); the
// batcher adds the Timeout from the send.
func (l *Limiter) decide(ctx context.Context, key string, q Quota, cost, want int) (reply, error) {
	return parseReply(l.batch.Run(ctx, window, []string{key}, q.Limit, q.Period.Milliseconds(), cost, want).Result())
}
