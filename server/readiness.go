package server

import (
	"context"
	"fmt"
)

// AddReadinessCheck makes /readyz also depend on fn (e.g. the database's
// Ping), after the checks already configured. name prefixes fn's error in
// the "not ready" log line; the response never carries it. Call it while
// wiring, before Serve: it is not safe to call concurrently with requests.
func (s *Server) AddReadinessCheck(name string, fn func(context.Context) error) {
	if fn == nil {
		return
	}
	prev := s.cfg.Ready
	s.cfg.Ready = func(ctx context.Context) error {
		if prev != nil {
			if err := prev(ctx); err != nil {
				return err
			}
		}
		if err := fn(ctx); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		return nil
	}
}
