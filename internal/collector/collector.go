// Package collector holds what every package that exposes Prometheus metrics
// shares: registering a collector on a caller's Registerer so that two
// components built on one registry share the collector instead of failing.
package collector

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// Register registers c on reg, or returns the collector already registered
// there under the same descriptor (two handlers, two verifiers or two
// stores built on one registry count into the same series).
func Register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing, nil
			}
		}
		return c, err
	}
	return c, nil
}
