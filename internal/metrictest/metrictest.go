// Package metrictest reads Prometheus samples in tests: from a registry
// (Value) or from a running server's /metrics page (Scrape).
package metrictest

import (
	"bufio"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// Value returns the first sample of the metric family name whose labels
// include every pair in labels: a counter's or gauge's value, or a
// histogram's sample count. found is false when no series matches.
func Value(tb testing.TB, g prometheus.Gatherer, name string, labels map[string]string) (v float64, found bool) {
	tb.Helper()
	mfs, err := g.Gather()
	if err != nil {
		tb.Fatalf("metrictest: gather: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if matches(m, labels) {
				return sample(m), true
			}
		}
	}
	return 0, false
}

func matches(m *dto.Metric, labels map[string]string) bool {
	have := make(map[string]string, len(m.GetLabel()))
	for _, lp := range m.GetLabel() {
		have[lp.GetName()] = lp.GetValue()
	}
	for k, v := range labels {
		if got, ok := have[k]; !ok || got != v {
			return false
		}
	}
	return true
}

func sample(m *dto.Metric) float64 {
	switch {
	case m.GetCounter() != nil:
		return m.GetCounter().GetValue()
	case m.GetGauge() != nil:
		return m.GetGauge().GetValue()
	case m.GetHistogram() != nil:
		return float64(m.GetHistogram().GetSampleCount())
	}
	return 0
}

// Token is the METRICS_TOKEN of in-process test servers: with it set,
// /metrics is served on the serving port (behind the token), so tests
// scrape the same base URL they send requests to.
const Token = "metrictest-scrape-token"

// Scrape fetches base+"/metrics" with Token and returns the value of one
// series, written as it appears on the page (`name{label="value",...}`,
// labels in the exposition's sorted order); 0 when absent.
func Scrape(tb testing.TB, base, series string) float64 {
	tb.Helper()
	for _, line := range page(tb, base) {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	return 0
}

// page fetches base+"/metrics" with Token and returns its lines.
func page(tb testing.TB, base string) []string {
	tb.Helper()
	req, err := http.NewRequest(http.MethodGet, base+"/metrics", nil)
	if err != nil {
		tb.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+Token)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	defer res.Body.Close()
	var lines []string
	sc := bufio.NewScanner(res.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	return lines
}

// ScrapeSum fetches base+"/metrics" with Token and returns the sum of the
// samples of the family name whose labels include every pair in labels
// (values as written on the page, unescaped ones only).
func ScrapeSum(tb testing.TB, base, name string, labels map[string]string) float64 {
	tb.Helper()
	var sum float64
	for _, line := range page(tb, base) {
		rest, ok := strings.CutPrefix(line, name+"{")
		if !ok {
			continue
		}
		set, value, ok := strings.Cut(rest, "} ")
		if !ok {
			continue
		}
		all := true
		for k, v := range labels {
			all = all && strings.Contains(","+set+",", ","+k+`="`+v+`",`)
		}
		if all {
			f, _ := strconv.ParseFloat(value, 64)
			sum += f
		}
	}
	return sum
}
