package deploy_test

import (
	"net"
	"strconv"
	"strings"
	"testing"

	"github.com/digis/jobworker/internal/apiapp"
	"github.com/digis/jobworker/internal/workerapp"
)

// defaultMetricsPort is where each binary serves /metrics when METRICS_ADDR
// is not set.
var defaultMetricsPort = map[string]int{"api": apiapp.DefaultMetricsPort, "worker": workerapp.DefaultMetricsPort}

// metricsPort is the port a workload serves /metrics on, 0 for none
// (METRICS_ADDR=off) and -1 when the manifest leaves it to deploy time.
func metricsPort(t *testing.T, w workload) int {
	t.Helper()
	v, set := w.env["METRICS_ADDR"]
	switch {
	case !set:
		return defaultMetricsPort[w.binary]
	case !v.resolved:
		return -1
	case v.value == "off":
		return 0
	}
	_, port, err := net.SplitHostPort(v.value)
	n, perr := strconv.Atoi(port)
	if err != nil || perr != nil {
		t.Fatalf("%s: METRICS_ADDR=%q is not host:port", w.where, v.value)
	}
	return n
}

// TestManifestsKeepMetricsPrivate: /metrics (business counters, the reasons
// requests were refused) is on METRICS_ADDR, and no manifest lets the
// internet or another tenant of the network reach it. Cloud Run routes the
// internet to the container's one port (ingress: all), so METRICS_ADDR is on
// loopback there, for a sidecar; a Lambda Function URL reaches PORT only, so
// it is off; no Kubernetes Service (and so no Ingress) targets the metrics
// port; compose publishes no port for it. No manifest sets METRICS_TOKEN,
// which would put /metrics on the serving port too.
func TestManifestsKeepMetricsPrivate(t *testing.T) {
	t.Parallel()
	checked := map[string]int{}
	all := workloads(t)
	for _, w := range all {
		if defaultMetricsPort[w.binary] == 0 || len(w.args) > 0 {
			continue // qstash-dev, `api -migrate`: no metrics listener
		}
		if _, ok := w.env["METRICS_TOKEN"]; ok {
			t.Errorf("%s: sets METRICS_TOKEN, which serves /metrics on PORT as well", w.where)
		}
		file, _, _ := strings.Cut(w.where, " ")
		switch {
		case strings.HasPrefix(file, "cloudrun/"):
			checked["cloudrun"]++
			v := w.env["METRICS_ADDR"]
			host, _, err := net.SplitHostPort(v.value)
			if v.value != "off" && (!v.resolved || err != nil || !net.ParseIP(host).IsLoopback()) {
				t.Errorf("%s: METRICS_ADDR=%q: with ingress all it must be on loopback (127.0.0.1:<port>) or off", w.where, v.value)
			}
		case strings.HasPrefix(file, "lambda/") && strings.HasSuffix(file, ".yaml"): // the template, not the image: it sets the environment
			checked["lambda"]++
			if p := metricsPort(t, w); p != 0 {
				t.Errorf("%s: METRICS_ADDR must be off (nothing can scrape a function), serves on port %d", w.where, p)
			}
		}
	}

	// Kubernetes: a Service's targetPort resolves, in the Deployment it
	// selects, to a container port that is not the metrics port. An
	// Ingress reaches pods only through Services.
	objs := byKind(t, "kubernetes/base/api.yaml", "kubernetes/base/worker.yaml")
	for name, svc := range objs["Service"] {
		dep := objs["Deployment"][name]
		for _, c := range list(dep, "spec", "template", "spec", "containers") {
			w := containerWorkloads(t, "kubernetes Deployment/"+name, c, true)
			if len(w) != 1 || defaultMetricsPort[w[0].binary] == 0 {
				continue
			}
			checked["kubernetes"]++
			metrics := metricsPort(t, w[0])
			byName := map[string]string{}
			for _, p := range list(c, "ports") {
				byName[str(p, "name")] = str(p, "containerPort")
			}
			for _, p := range list(svc, "spec", "ports") {
				target := str(p, "targetPort")
				if n, ok := byName[target]; ok {
					target = n
				}
				if target == "" {
					target = str(p, "port") // a Service without targetPort targets its port
				}
				if target == strconv.Itoa(metrics) {
					t.Errorf("Service %s port %s routes to the metrics port %d", name, str(p, "name"), metrics)
				}
			}
		}
	}

	// compose: the api's and worker's published ports are not the metrics
	// port ("127.0.0.1:3000:3000", "3000:3000", "3000", {target: 3000}).
	compose := load(t, "compose.yaml")[0]
	for _, w := range all {
		svc, isCompose := strings.CutPrefix(w.where, "compose.yaml services.")
		if !isCompose || defaultMetricsPort[w.binary] == 0 || len(w.args) > 0 {
			continue
		}
		checked["compose"]++
		metrics := strconv.Itoa(metricsPort(t, w))
		for _, p := range list(compose, "services", svc, "ports") {
			target := str(p, "target")
			if s, ok := p.(string); ok {
				parts := strings.Split(strings.TrimSuffix(strings.TrimSuffix(s, "/tcp"), "/udp"), ":")
				target = parts[len(parts)-1]
			}
			if target == metrics {
				t.Errorf("compose service %s publishes the metrics port %s (%v)", svc, metrics, p)
			}
		}
	}

	for _, where := range []string{"cloudrun", "lambda", "kubernetes", "compose"} {
		if checked[where] < 2 {
			t.Errorf("checked %d api/worker workloads on %s, want both binaries", checked[where], where)
		}
	}
}
