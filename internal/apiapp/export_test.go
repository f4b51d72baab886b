package apiapp

import "github.com/digis/jobworker/internal/process"

// BuildNotifyingInTx is Build with the follow-ups written the outbox's
// default way, the NOTIFY inside the change's transaction: the benchmark's
// evidence for writing them WithoutNotify.
func BuildNotifyingInTx(cfg Config, deps Deps) (*process.Process, error) {
	return build(cfg, deps, variant{notifyInTx: true})
}

// BuildRowPerJob is Build with a tip's two follow-ups written as two outbox
// rows (outbox.EnqueueMany), the layout before multi-job rows: the
// benchmark's evidence for one row per tip.
func BuildRowPerJob(cfg Config, deps Deps) (*process.Process, error) {
	return build(cfg, deps, variant{rowPerJob: true})
}

// BuildRelayConcurrency is Build with the in-process relay running n rounds
// at once.
func BuildRelayConcurrency(cfg Config, deps Deps, n int) (*process.Process, error) {
	return build(cfg, deps, variant{relayConcurrency: n})
}
