package webhooks_test

import (
	"testing"

	"github.com/digis/jobworker/internal/metrictest"

	"github.com/prometheus/client_golang/prometheus"
)

// counter returns the value of the series name{labels}, or -1 if absent.
func counter(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	if v, ok := metrictest.Value(t, reg, name, labels); ok {
		return v
	}
	return -1
}
