package deploy_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/digis/jobworker/internal/config"
)

// envSources are where the binaries read their environment. Every quoted
// UPPER_CASE string passed to a call in their non-test Go files counts as a
// variable the code reads (config's r.secret("QSTASH_TOKEN"),
// os.Getenv("QSTASH_DEV_ADDR"), ...), so new variables are picked up without
// touching this test. A stray "GET" only adds a harmless name.
var envSources = []string{"internal/config", "cmd"}

// externalEnv are variables read by something other than our code.
var externalEnv = map[string]string{
	"GOMEMLIMIT": "the Go runtime",
	"GOMAXPROCS": "the Go runtime",
	"GOGC":       "the Go runtime",
	"GODEBUG":    "the Go runtime",
}

// externalPrefixes: the Lambda Web Adapter reads AWS_LWA_*.
var externalPrefixes = []string{"AWS_LWA_"}

// pendingEnv are variables the manifests already set for features being
// built now (the issue that adds each one makes the code read it). A name
// here that the code reads is reported so it can be dropped from this list.
var pendingEnv = map[string]string{
	"DATABASE_URL":               "PostgreSQL stores",
	"AUTH_JWT_SECRET":            "API authentication",
	"RATE_LIMIT_IP_SOURCE":       "rate-limit client identity (limits.ParseIPSource)",
	"RATE_LIMIT_TRUSTED_PROXIES": "rate-limit client identity (limits.ParseIPSource)",
}

// knownEnv scans envSources for the variables the code reads.
func knownEnv(t *testing.T) map[string]string {
	t.Helper()
	known := map[string]string{}
	fset := token.NewFileSet()
	for _, dir := range envSources {
		root := filepath.Join(repoRoot, dir)
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() && d.Name() == "testdata" {
				return filepath.SkipDir
			}
			if d.IsDir() || !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") {
				return nil
			}
			f, err := parser.ParseFile(fset, p, nil, parser.SkipObjectResolution)
			if err != nil {
				return err
			}
			ast.Inspect(f, func(n ast.Node) bool {
				call, ok := n.(*ast.CallExpr)
				if !ok {
					return true
				}
				for _, a := range call.Args {
					lit, ok := a.(*ast.BasicLit)
					if !ok || lit.Kind != token.STRING {
						continue
					}
					if s, err := strconv.Unquote(lit.Value); err == nil && upperName.MatchString(s) {
						if _, seen := known[s]; !seen {
							rel, _ := filepath.Rel(repoRoot, p)
							known[s] = filepath.ToSlash(rel)
						}
					}
				}
				return true
			})
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if len(known) < 10 {
		t.Fatalf("found only %d variables in %v; did the config reader change shape?", len(known), envSources)
	}
	return known
}

// envValue is one variable a manifest sets. Values known only at deploy time
// (secret references, CloudFormation tags, unset ${VAR}s) are not resolved.
type envValue struct {
	value    string
	resolved bool
}

// workload is one of our binaries as a manifest runs it.
type workload struct {
	where  string // file and location, for messages
	binary string // api, worker, qstash-dev
	env    map[string]envValue
}

var ourBinaries = map[string]bool{"api": true, "worker": true, "qstash-dev": true}

// composeVar is ${NAME}, ${NAME:-default} or ${NAME-default}.
var composeVar = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}`)

func composeValue(v any) envValue {
	s, ok := v.(string)
	if !ok {
		return envValue{}
	}
	resolved := true
	out := composeVar.ReplaceAllStringFunc(s, func(m string) string {
		sub := composeVar.FindStringSubmatch(m)
		if strings.Contains(m, "-") {
			return sub[2]
		}
		resolved = false
		return ""
	})
	return envValue{value: out, resolved: resolved}
}

// workloads finds every place a manifest runs one of our binaries.
func workloads(t *testing.T) []workload {
	t.Helper()
	var out []workload
	for _, f := range manifestFiles(t) {
		docs, err := decodeFile(f)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		file := filepath.ToSlash(f)
		for _, doc := range docs {
			out = append(out, docWorkloads(t, file, doc)...)
			for _, p := range list(doc, "patches") {
				pdocs, err := decodeYAML([]byte(str(p, "patch")))
				if err != nil {
					t.Fatalf("%s patch: %v", file, err)
				}
				for _, pd := range pdocs {
					out = append(out, docWorkloads(t, file+" (patch)", pd)...)
				}
			}
		}
	}
	for _, p := range dockerfiles {
		d := parseDockerfile(t, p)
		for _, s := range finalStages(d) {
			w := workload{where: p + " stage " + s.name, binary: path.Base(s.entrypoint()[0]), env: map[string]envValue{}}
			for k, v := range s.env() {
				w.env[k] = envValue{value: v, resolved: true}
			}
			out = append(out, w)
		}
	}
	if len(out) < 10 {
		t.Fatalf("found only %d workloads in the manifests", len(out))
	}
	return out
}

func docWorkloads(t *testing.T, file string, doc any) []workload {
	var out []workload
	switch {
	case get(doc, "services") != nil && strings.HasPrefix(path.Base(file), "compose"):
		for name, svc := range mapping(doc, "services") {
			if !strings.HasSuffix(str(svc, "build", "dockerfile"), "deploy/Dockerfile") {
				continue // redis, postgres: not ours
			}
			w := workload{where: file + " services." + name, binary: str(svc, "build", "target"), env: map[string]envValue{}}
			switch env := get(svc, "environment").(type) {
			case map[string]any:
				for k, v := range env {
					w.env[k] = composeValue(v)
				}
			case []any:
				for _, e := range env {
					k, v, _ := strings.Cut(e.(string), "=")
					w.env[k] = composeValue(v)
				}
			}
			out = append(out, w)
		}
	case str(doc, "kind") == "Deployment" || (str(doc, "kind") == "Service" && strings.HasPrefix(str(doc, "apiVersion"), "serving.knative.dev/")):
		for i, c := range list(doc, "spec", "template", "spec", "containers") {
			name := str(c, "name")
			if !ourBinaries[name] {
				t.Errorf("%s: %s container %d is named %q; name containers after the binary (api, worker, qstash-dev)", file, str(doc, "metadata", "name"), i, name)
				continue
			}
			w := workload{where: file + " " + str(doc, "kind") + "/" + str(doc, "metadata", "name"), binary: name, env: map[string]envValue{}}
			for _, e := range list(c, "env") {
				v, ok := get(e, "value").(string)
				w.env[str(e, "name")] = envValue{value: v, resolved: ok}
			}
			out = append(out, w)
		}
	case strings.HasPrefix(str(doc, "Transform"), "AWS::Serverless"):
		global := mapping(doc, "Globals", "Function", "Environment", "Variables")
		for name, res := range mapping(doc, "Resources") {
			if str(res, "Type") != "AWS::Serverless::Function" {
				continue
			}
			w := workload{where: file + " Resources." + name, binary: str(res, "Metadata", "DockerBuildTarget"), env: map[string]envValue{}}
			for _, vars := range []map[string]any{global, mapping(res, "Properties", "Environment", "Variables")} {
				for k, v := range vars {
					s, ok := v.(string)
					w.env[k] = envValue{value: s, resolved: ok}
				}
			}
			out = append(out, w)
		}
	}
	return out
}

func TestManifestEnvVarsAreReadByTheCode(t *testing.T) {
	t.Parallel()
	known := knownEnv(t)
	for name := range pendingEnv {
		if src, ok := known[name]; ok {
			t.Logf("%s is now read by %s: drop it from pendingEnv", name, src)
		}
	}
	for _, w := range workloads(t) {
		if !ourBinaries[w.binary] {
			t.Errorf("%s: runs %q, not one of our binaries", w.where, w.binary)
		}
		for name := range w.env {
			_, isKnown := known[name]
			_, isPending := pendingEnv[name]
			_, isExternal := externalEnv[name]
			for _, p := range externalPrefixes {
				isExternal = isExternal || strings.HasPrefix(name, p)
			}
			if !isKnown && !isPending && !isExternal {
				t.Errorf("%s sets %s, which no code in %v reads (a typo, or a variable that was removed?)", w.where, name, envSources)
			}
		}
	}
}

// placeholder stands in for a value known only at deploy time.
func placeholder(name string) string {
	switch {
	case name == "REDIS_URL":
		return "rediss://default:placeholder@redis.invalid:6379"
	case name == "DATABASE_URL":
		return "postgres://u:placeholder@db.invalid:5432/db?sslmode=verify-full"
	case strings.HasSuffix(name, "_URL"):
		return "https://placeholder.invalid"
	case name == "STRIPE_WEBHOOK_SECRET":
		return "whsec_placeholder"
	}
	return "placeholder"
}

// TestManifestEnvPassesConfig runs the binaries' own configuration loaders on
// each manifest's environment: a required variable a manifest forgot, or a
// literal value the binary would refuse, fails here instead of at deploy.
func TestManifestEnvPassesConfig(t *testing.T) {
	t.Parallel()
	loaders := map[string]func(config.Getenv) error{
		"api":    func(g config.Getenv) error { _, err := config.LoadAPI(g); return err },
		"worker": func(g config.Getenv) error { _, err := config.LoadWorker(g); return err },
	}
	seen := map[string]int{}
	for _, w := range workloads(t) {
		load, ok := loaders[w.binary]
		if !ok || strings.Contains(w.where, "(patch)") || strings.Contains(w.where, "Dockerfile") {
			continue // patches and image defaults are partial environments
		}
		seen[w.binary]++
		getenv := func(name string) string {
			v, ok := w.env[name]
			switch {
			case !ok:
				return ""
			case !v.resolved:
				return placeholder(name)
			}
			return v.value
		}
		if err := load(getenv); err != nil {
			t.Errorf("%s: the %s binary would refuse this environment: %v", w.where, w.binary, err)
		}
	}
	// compose, Cloud Run, Lambda and Kubernetes each run both.
	for _, b := range []string{"api", "worker"} {
		if seen[b] < 4 {
			t.Errorf("%s runs in %d manifests, want at least 4", b, seen[b])
		}
	}
}

func TestComposeValueInterpolation(t *testing.T) {
	t.Parallel()
	tests := []struct {
		given        string
		want         string
		wantResolved bool
	}{
		{"plain", "plain", true},
		{"${X:-def}", "def", true},
		{"a-${X-d}-b", "a-d-b", true},
		{"${X}", "", false},
	}
	for _, tt := range tests {
		got := composeValue(tt.given)
		if got.value != tt.want || got.resolved != tt.wantResolved {
			t.Errorf("composeValue(%q) = %+v, want %q resolved=%v", tt.given, got, tt.want, tt.wantResolved)
		}
	}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
