package apiapp

import "github.com/digis/jobworker/internal/process"

// BuildNotifyingInTx is Build with the follow-ups written the outbox's
// default way, the NOTIFY inside the change's transaction: the benchmark's
// evidence for writing them WithoutNotify.
func BuildNotifyingInTx(cfg Config, deps Deps) (*process.Process, error) {
	return build(cfg, deps, true)
}
