package webhooks_test

import (
	"io"
	"sync"
	"testing"

	"github.com/digis/jobworker/internal/metrictest"

	"github.com/prometheus/client_golang/prometheus"
)

// lockedWriter serialises log writes from parallel requests.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// counter returns the value of the series name{labels}, or -1 if absent.
func counter(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	if v, ok := metrictest.Value(t, reg, name, labels); ok {
		return v
	}
	return -1
}
