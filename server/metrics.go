package server

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// MetricsPath is where the metrics are served.
const MetricsPath = "/metrics"

// MinMetricsTokenLen is the shortest Config.MetricsToken accepted: it
// stands between the internet and the business counters.
const MinMetricsTokenLen = 16

// MetricsHandler serves the registry in the Prometheus text format. With
// Config.MetricsToken set it answers 401 unless the request carries
// "Authorization: Bearer <MetricsToken>". Run serves it on MetricsAddr,
// and on Addr at MetricsPath when a token is set; mount it yourself to
// serve it elsewhere.
func (s *Server) MetricsHandler() http.Handler { return s.metricsHandler }

func newMetricsHandler(cfg Config) http.Handler {
	h := promhttp.HandlerFor(cfg.Registry, promhttp.HandlerOpts{Registry: cfg.Registry})
	if cfg.MetricsToken == "" {
		return h
	}
	want := sha256.Sum256([]byte(cfg.MetricsToken))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Hashing first makes the comparison independent of the length.
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		got := sha256.Sum256([]byte(tok))
		if !ok || subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="metrics"`)
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// checkMetrics validates the metrics settings of cfg.
func checkMetrics(cfg Config) error {
	if t := cfg.MetricsToken; t != "" && (len(t) < MinMetricsTokenLen || strings.TrimSpace(t) != t) {
		return fmt.Errorf("server: MetricsToken must be at least %d bytes without surrounding white space", MinMetricsTokenLen)
	}
	if cfg.MetricsAddr == "" {
		return nil
	}
	_, port, err := net.SplitHostPort(cfg.MetricsAddr)
	if err != nil {
		return errors.New("server: MetricsAddr must be host:port or :port")
	}
	if _, addrPort, err := net.SplitHostPort(cfg.Addr); err == nil && port == addrPort && port != "0" {
		return errors.New("server: MetricsAddr must not use the serving port (Addr)")
	}
	return nil
}

// serveMetrics serves only MetricsPath on ln until stop is closed.
func (s *Server) serveMetrics(ln net.Listener, stop <-chan struct{}) <-chan error {
	mux := http.NewServeMux()
	mux.Handle("GET "+MetricsPath, s.metricsHandler)
	hs := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    8 << 10,
	}
	s.log.Info("metrics listening", "addr", ln.Addr().String(), "token", s.cfg.MetricsToken != "")
	done := make(chan error, 1)
	go func() {
		err := hs.Serve(ln)
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		done <- err
	}()
	go func() {
		<-stop
		_ = hs.Close()
	}()
	return done
}
