package deploy_test

import (
	"encoding/json"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// promtool finds promtool (Debian's prometheus package); without it the
// test skips, except under CI=true, where it fails.
func promtool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("promtool not found (CI=true requires it: apt-get install prometheus)")
		}
		t.Skip("promtool not found; apt-get install prometheus to check the alert rules")
	}
	return p
}

func runPromtool(t *testing.T, args ...string) {
	t.Helper()
	cmd := exec.Command(promtool(t), args...)
	cmd.Dir = "monitoring"
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// TestAlertRules checks the rules with promtool and runs their unit tests
// (each alert fires on the series it is about, with its annotations).
func TestAlertRules(t *testing.T) {
	t.Parallel()
	runPromtool(t, "check", "rules", "alerts.yaml")
	runPromtool(t, "test", "rules", "alerts_test.yaml")
	var rules struct {
		Groups []struct {
			Rules []struct{ Alert, Expr string }
		}
	}
	b, err := os.ReadFile("monitoring/alerts.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, &rules); err != nil {
		t.Fatal(err)
	}
	// The list: DLQ growing, delivery error rate, limiter degraded,
	// outbox age, Redis errors.
	want := []string{"JobworkerDLQGrowing", "JobworkerDeliveryErrorRate", "JobworkerRateLimiterDegraded", "JobworkerOutboxStuck", "JobworkerRedisErrors"}
	have := map[string]bool{}
	var exprs []string
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			have[r.Alert] = true
			exprs = append(exprs, r.Expr)
		}
	}
	for _, w := range want {
		if !have[w] {
			t.Errorf("alert %s is missing", w)
		}
	}
	checkMetricNames(t, "alerts.yaml", exprs)
}

// TestGrafanaDashboard checks every panel's queries with promtool (as
// recording rules, Grafana's interval variables replaced) and that every
// metric they name is one the code declares.
func TestGrafanaDashboard(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile("monitoring/grafana-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		UID    string `json:"uid"`
		Panels []struct {
			Title   string `json:"title"`
			GridPos struct{ H, W, X, Y int }
			Targets []struct {
				Expr       string `json:"expr"`
				Datasource struct {
					UID string `json:"uid"`
				} `json:"datasource"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("grafana-dashboard.json: %v", err)
	}
	if dash.UID == "" || len(dash.Panels) == 0 {
		t.Fatal("dashboard without uid or panels")
	}
	var exprs []string
	type rule struct {
		Record string `yaml:"record"`
		Expr   string `yaml:"expr"`
	}
	var rules []rule
	grafanaVars := strings.NewReplacer("$__rate_interval", "5m", "$__interval", "1m", "$__range", "1h")
	for i, p := range dash.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		if p.GridPos.W <= 0 || p.GridPos.H <= 0 || p.GridPos.X+p.GridPos.W > 24 {
			t.Errorf("panel %q is placed off the grid: %+v", p.Title, p.GridPos)
		}
		for j, tg := range p.Targets {
			if tg.Datasource.UID != "${datasource}" {
				t.Errorf("panel %q query %d names datasource %q, want the ${datasource} variable", p.Title, j, tg.Datasource.UID)
			}
			exprs = append(exprs, tg.Expr)
			rules = append(rules, rule{Record: "dashboard:panel" + string(rune('a'+i)) + ":" + string(rune('a'+j)), Expr: grafanaVars.Replace(tg.Expr)})
		}
	}
	out, err := yaml.Marshal(map[string]any{"groups": []any{map[string]any{"name": "dashboard", "rules": rules}}})
	if err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(t.TempDir(), "dashboard-rules.yaml")
	if err := os.WriteFile(f, out, 0o644); err != nil {
		t.Fatal(err)
	}
	runPromtool(t, "check", "rules", f)
	checkMetricNames(t, "grafana-dashboard.json", exprs)
}

var metricRef = regexp.MustCompile(`\bjobworker_[a-z_]+`)

// checkMetricNames fails for a jobworker_ metric the code does not declare
// (a histogram's _bucket, _count and _sum count as their histogram).
func checkMetricNames(t *testing.T, file string, exprs []string) {
	t.Helper()
	declared := declaredMetrics(t)
	for _, e := range exprs {
		for _, m := range metricRef.FindAllString(e, -1) {
			base := m
			for _, suf := range []string{"_bucket", "_count", "_sum"} {
				if declared[strings.TrimSuffix(m, suf)] {
					base = strings.TrimSuffix(m, suf)
				}
			}
			if !declared[base] {
				t.Errorf("%s names %s, which no package declares", file, m)
			}
		}
	}
}

var metricDecl = regexp.MustCompile(`Name:\s+"(jobworker_[a-z_]+)"`)

func declaredMetrics(t *testing.T) map[string]bool {
	t.Helper()
	names := map[string]bool{}
	err := filepath.WalkDir(repoRoot, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == "node_modules" || d.Name() == "testdata" || strings.HasPrefix(d.Name(), ".")) && path != repoRoot {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range metricDecl.FindAllSubmatch(b, -1) {
			names[string(m[1])] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !names["jobworker_deliveries_total"] {
		t.Fatal("found no metric declarations")
	}
	return names
}
