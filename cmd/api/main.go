// Command api is jobworker's public HTTP API: it serves people and apps,
// rate-limits them, makes money routes idempotent and hands anything slow to
// QStash as a job. Configuration comes from the environment (see README).
package main

import (
	"fmt"
	"os"

	"github.com/digis/jobworker/internal/config"
	"github.com/digis/jobworker/internal/server"
)

func main() {
	if server.IsProbe(os.Args) {
		os.Exit(server.Probe(config.DefaultAPIPort))
	}
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "api:", err)
		os.Exit(1)
	}
}

func run() error {
	cfg, err := config.LoadAPI(os.Getenv)
	if err != nil {
		return err
	}
	p, err := server.NewProcess("api", cfg.Common)
	if err != nil {
		return err
	}
	p.Log.Info("starting", "port", cfg.Port, "qstash_url", cfg.QStashURL, "worker_public_url", cfg.WorkerPublicURL)
	return p.Run()
}
