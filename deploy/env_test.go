package deploy_test

import (
	"errors"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/digis/jobworker/internal/apiapp"
	"github.com/digis/jobworker/internal/env"
	"github.com/digis/jobworker/internal/workerapp"
)

// envRoots are the binaries the manifests run. The scan follows their
// imports inside this module, so every package they link is searched (config's
// r.secret("QSTASH_TOKEN"), auth's getenv(EnvSecret), os.Getenv("PORT") in
// server) and nothing else: test helpers reading CI or PGTEST_* stay out. A
// package that starts reading a variable is found without touching this test.
var envRoots = []string{"cmd/api", "cmd/worker", "cmd/qstash-dev"}

// externalEnv are variables read by something other than our code.
var externalEnv = map[string]string{
	"GOMEMLIMIT": "the Go runtime",
	"GOMAXPROCS": "the Go runtime",
	"GOGC":       "the Go runtime",
	"GODEBUG":    "the Go runtime",
}

// externalPrefixes: the Lambda Web Adapter reads AWS_LWA_*.
var externalPrefixes = []string{"AWS_LWA_"}

// pendingEnv are variables a manifest may set before the code reads them,
// for a feature being built now. A name here that the code reads fails
// TestManifestEnvVarsAreReadByTheCode, so the list cannot go stale.
var pendingEnv = map[string]string{}

// goPackage is one parsed package of this module (non-test files).
type goPackage struct {
	dir    string // relative to the module root, slash-separated
	name   string
	files  []*ast.File
	paths  []string          // file paths, parallel to files
	consts map[string]string // string constants declared at package level
}

// modulePath reads the module line of go.mod.
func modulePath(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "module "); ok {
			return strings.Trim(strings.TrimSpace(rest), `"`)
		}
	}
	t.Fatal("go.mod has no module line")
	return ""
}

// linkedPackages parses roots and, transitively, every package of this module
// they import.
func linkedPackages(t *testing.T, roots []string) map[string]*goPackage {
	t.Helper()
	mod := modulePath(t)
	fset := token.NewFileSet()
	pkgs := map[string]*goPackage{}
	queue := append([]string(nil), roots...)
	for len(queue) > 0 {
		dir := queue[0]
		queue = queue[1:]
		if pkgs[dir] != nil {
			continue
		}
		entries, err := os.ReadDir(filepath.Join(repoRoot, filepath.FromSlash(dir)))
		if err != nil {
			t.Fatalf("package %s: %v", dir, err)
		}
		pkg := &goPackage{dir: dir, consts: map[string]string{}}
		pkgs[dir] = pkg
		for _, e := range entries {
			n := e.Name()
			if e.IsDir() || !strings.HasSuffix(n, ".go") || strings.HasSuffix(n, "_test.go") {
				continue
			}
			p := filepath.Join(repoRoot, filepath.FromSlash(dir), n)
			f, err := parser.ParseFile(fset, p, nil, parser.SkipObjectResolution)
			if err != nil {
				t.Fatal(err)
			}
			pkg.name = f.Name.Name
			pkg.files = append(pkg.files, f)
			pkg.paths = append(pkg.paths, path.Join(dir, n))
			for _, imp := range f.Imports {
				ip, _ := strconv.Unquote(imp.Path.Value)
				if rel, ok := strings.CutPrefix(ip, mod+"/"); ok {
					queue = append(queue, rel)
				}
			}
			for _, d := range f.Decls {
				gd, ok := d.(*ast.GenDecl)
				if !ok || gd.Tok != token.CONST {
					continue
				}
				for _, spec := range gd.Specs {
					vs := spec.(*ast.ValueSpec)
					for i, id := range vs.Names {
						if i >= len(vs.Values) {
							break
						}
						if s, ok := stringLit(vs.Values[i]); ok {
							pkg.consts[id.Name] = s
						}
					}
				}
			}
		}
	}
	return pkgs
}

func stringLit(e ast.Expr) (string, bool) {
	lit, ok := e.(*ast.BasicLit)
	if !ok || lit.Kind != token.STRING {
		return "", false
	}
	s, err := strconv.Unquote(lit.Value)
	return s, err == nil
}

// knownEnv returns the variables the binaries read, each with the file that
// reads it: every UPPER_CASE string passed to a call, as a literal or as a
// string constant of a scanned package (getenv(EnvSecret),
// r.getenv(auth.EnvJWKSURL)). A stray "GET" only adds a harmless name.
func knownEnv(t *testing.T) map[string]string {
	t.Helper()
	pkgs := linkedPackages(t, envRoots)
	mod := modulePath(t)
	known := map[string]string{}
	for _, dir := range sortedKeys(pkgs) {
		pkg := pkgs[dir]
		for i, f := range pkg.files {
			// The names this file imports module packages under.
			aliases := map[string]*goPackage{}
			for _, imp := range f.Imports {
				ip, _ := strconv.Unquote(imp.Path.Value)
				rel, ok := strings.CutPrefix(ip, mod+"/")
				if !ok {
					continue
				}
				dep := pkgs[rel]
				name := dep.name
				if imp.Name != nil {
					name = imp.Name.Name
				}
				aliases[name] = dep
			}
			ast.Inspect(f, func(n ast.Node) bool {
				call, ok := n.(*ast.CallExpr)
				if !ok {
					return true
				}
				for _, a := range call.Args {
					var s string
					switch a := a.(type) {
					case *ast.BasicLit:
						s, _ = stringLit(a)
					case *ast.Ident:
						s = pkg.consts[a.Name]
					case *ast.SelectorExpr:
						if x, ok := a.X.(*ast.Ident); ok && aliases[x.Name] != nil {
							s = aliases[x.Name].consts[a.Sel.Name]
						}
					}
					if upperName.MatchString(s) {
						if _, seen := known[s]; !seen {
							known[s] = pkg.paths[i]
						}
					}
				}
				return true
			})
		}
	}
	if len(known) < 10 {
		t.Fatalf("found only %d variables in the packages %v link; did the config reader change shape?", len(known), envRoots)
	}
	return known
}

// envValue is one variable a manifest sets. Values known only at deploy time
// (secret references, CloudFormation tags, unset ${VAR}s) are not resolved;
// a Kubernetes secretKeyRef keeps its key so the test can take the value from
// secret.example.yaml.
type envValue struct {
	value     string
	resolved  bool
	secretKey string
}

// workload is one of our binaries as a manifest runs it.
type workload struct {
	where  string   // file and location, for messages
	binary string   // api, worker, qstash-dev
	args   []string // after the entrypoint: none, or -migrate for the api
	env    map[string]envValue
}

// mode is the command line without the leading slash: "worker", "api -migrate".
func (w workload) mode() string {
	return strings.Join(append([]string{w.binary}, w.args...), " ")
}

var ourBinaries = map[string]bool{"api": true, "worker": true, "qstash-dev": true}

// migrateContainer is the name of a container or one-shot service that runs
// the api image as `/api -migrate`.
const migrateContainer = "migrate"

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

// words returns the strings of a YAML sequence, or the fields of a scalar
// (compose accepts a command in either form).
func words(v any) []string {
	if s, ok := v.(string); ok {
		return strings.Fields(s)
	}
	var out []string
	for _, e := range v.([]any) {
		s, _ := e.(string)
		out = append(out, s)
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
			if c := get(svc, "command"); c != nil {
				w.args = words(c)
			}
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
	case str(doc, "kind") == "Deployment":
		where := file + " Deployment/" + str(doc, "metadata", "name")
		spec := get(doc, "spec", "template", "spec")
		for _, c := range list(spec, "initContainers") {
			out = append(out, containerWorkloads(t, where, c, true)...)
		}
		for _, c := range list(spec, "containers") {
			out = append(out, containerWorkloads(t, where, c, true)...)
		}
	case str(doc, "kind") == "Service" && strings.HasPrefix(str(doc, "apiVersion"), "serving.knative.dev/"):
		where := file + " Service/" + str(doc, "metadata", "name")
		for _, c := range list(doc, "spec", "template", "spec", "containers") {
			out = append(out, containerWorkloads(t, where, c, false)...)
		}
	case str(doc, "kind") == "Job" && strings.HasPrefix(str(doc, "apiVersion"), "run.googleapis.com/"):
		// A Cloud Run job: execution template, then task template.
		where := file + " Job/" + str(doc, "metadata", "name")
		for _, c := range list(doc, "spec", "template", "spec", "template", "spec", "containers") {
			out = append(out, containerWorkloads(t, where, c, false)...)
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

// containerWorkloads reads one Kubernetes-style container (Deployment, Cloud
// Run service or job). Containers are named after the binary they run, or
// "migrate" for `/api -migrate`. kube says a secretKeyRef names a key of the
// jobworker Secret (on Cloud Run it names a Secret Manager secret).
func containerWorkloads(t *testing.T, where string, c any, kube bool) []workload {
	name := str(c, "name")
	w := workload{where: where + " container " + name, binary: name, env: map[string]envValue{}}
	if a := get(c, "args"); a != nil {
		w.args = words(a)
	}
	switch {
	case name == migrateContainer:
		w.binary = "api"
		if w.mode() != "api -migrate" {
			t.Errorf("%s: a %q container must run the api image with args [-migrate], has %v", w.where, migrateContainer, w.args)
		}
	case !ourBinaries[name]:
		t.Errorf("%s: name containers after the binary (api, worker, qstash-dev) or %q for `/api -migrate`", w.where, migrateContainer)
		return nil
	}
	for _, e := range list(c, "env") {
		v, ok := get(e, "value").(string)
		ev := envValue{value: v, resolved: ok}
		if ref := get(e, "valueFrom", "secretKeyRef"); ref != nil && kube {
			ev.secretKey = str(ref, "key")
		}
		w.env[str(e, "name")] = ev
	}
	return []workload{w}
}

func TestManifestEnvVarsAreReadByTheCode(t *testing.T) {
	t.Parallel()
	known := knownEnv(t)
	for name := range pendingEnv {
		if src, ok := known[name]; ok {
			t.Errorf("%s is now read by %s: drop it from pendingEnv", name, src)
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
				t.Errorf("%s sets %s, which no code linked into %v reads (a typo, or a variable that was removed?)", w.where, name, envRoots)
			}
		}
	}
}

// TestEnvScanFindsWhatTheLoadersRead checks the scan against the loaders
// themselves: every variable LoadAPI and LoadWorker ask for (through helpers
// or other packages such as internal/auth) must be one knownEnv found.
func TestEnvScanFindsWhatTheLoadersRead(t *testing.T) {
	t.Parallel()
	known := knownEnv(t)
	tests := []struct {
		name string
		load func(env.Getenv) error
	}{
		{"api", func(g env.Getenv) error { _, err := apiapp.LoadConfig(g); return err }},
		{"worker", func(g env.Getenv) error { _, err := workerapp.LoadConfig(g); return err }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			asked := map[string]bool{}
			// Valid values for everything, so the loader reads straight through
			// (optional variables such as RATE_LIMIT_HASH_KEY included).
			valid := map[string]string{"RATE_LIMIT_IP_SOURCE": "xff", "RATE_LIMIT_TRUSTED_PROXIES": "10.0.0.0/8"}
			err := tt.load(func(name string) string {
				asked[name] = true
				if v, ok := valid[name]; ok {
					return v
				}
				switch name {
				case "REDIS_URL", "DATABASE_URL", "QSTASH_TOKEN", "WORKER_PUBLIC_URL", "AUTH_JWT_SECRET", "RATE_LIMIT_HASH_KEY",
					"QSTASH_CURRENT_SIGNING_KEY", "QSTASH_NEXT_SIGNING_KEY", "STRIPE_WEBHOOK_SECRET":
					return placeholder(name)
				}
				return ""
			})
			if err != nil {
				t.Fatalf("loader refused the test environment: %v", err)
			}
			for _, name := range sortedKeys(asked) {
				if _, ok := known[name]; !ok {
					t.Errorf("the %s loader reads %s, which the scan of %v did not find", tt.name, name, envRoots)
				}
			}
			for _, want := range []string{"AUTH_JWT_SECRET", "AUTH_JWKS_URL", "DATABASE_URL", "QSTASH_TOKEN"} {
				if tt.name == "api" && !asked[want] {
					t.Errorf("LoadAPI did not ask for %s", want)
				}
			}
		})
	}
}

// placeholder stands in for a value known only at deploy time. It is long
// enough for the length checks on secrets (AUTH_JWT_SECRET: 32 bytes).
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
	return strings.Repeat("placeholder.", 4)
}

// kubeSecret is the example Secret the Kubernetes manifests reference.
func kubeSecret(t *testing.T) map[string]any {
	t.Helper()
	docs, err := decodeFile(filepath.FromSlash("kubernetes/secret.example.yaml"))
	if err != nil || len(docs) != 1 {
		t.Fatalf("secret.example.yaml: %v (%d documents)", err, len(docs))
	}
	return mapping(docs[0], "stringData")
}

// TestManifestEnvPassesConfig runs the binaries' own configuration loaders on
// each manifest's environment: a required variable a manifest forgot, or a
// literal value the binary would refuse, fails here instead of at deploy.
// Kubernetes secret references take secret.example.yaml's placeholders, so
// those must pass too.
func TestManifestEnvPassesConfig(t *testing.T) {
	t.Parallel()
	loaders := map[string]func(env.Getenv) error{
		"api":    func(g env.Getenv) error { _, err := apiapp.LoadConfig(g); return err },
		"worker": func(g env.Getenv) error { _, err := workerapp.LoadConfig(g); return err },
		// cmd/api's migrate(): DATABASE_URL only, so a release step needs no
		// other secret.
		"api -migrate": func(g env.Getenv) error {
			if g("DATABASE_URL") == "" {
				return errors.New("DATABASE_URL: required by -migrate")
			}
			return nil
		},
	}
	secret := kubeSecret(t)
	seen := map[string]int{}
	for _, w := range workloads(t) {
		if strings.Contains(w.where, "(patch)") || strings.Contains(w.where, "Dockerfile") || w.binary == "qstash-dev" {
			continue // patches and image defaults are partial environments
		}
		load, ok := loaders[w.mode()]
		if !ok {
			t.Errorf("%s runs %q, which has no loader here (a new flag?)", w.where, w.mode())
			continue
		}
		seen[w.mode()]++
		getenv := func(name string) string {
			v, ok := w.env[name]
			switch {
			case !ok:
				return ""
			case v.secretKey != "":
				if s, ok := secret[v.secretKey].(string); ok {
					return s
				}
				t.Errorf("%s: %s refers to Secret key %s, which secret.example.yaml lacks", w.where, name, v.secretKey)
				return placeholder(name)
			case !v.resolved:
				return placeholder(name)
			}
			return v.value
		}
		if err := load(getenv); err != nil {
			t.Errorf("%s: `%s` would refuse this environment: %v", w.where, w.mode(), err)
		}
		if w.mode() == "api -migrate" {
			for name := range w.env {
				if name != "DATABASE_URL" {
					t.Errorf("%s: the migration step gets %s; `api -migrate` reads only DATABASE_URL, so give it no other secret", w.where, name)
				}
			}
		}
	}
	// compose, Cloud Run, Lambda and Kubernetes each run both; all but
	// Lambda (documented in README.md) carry a migration step.
	for mode, want := range map[string]int{"api": 4, "worker": 4, "api -migrate": 3} {
		if seen[mode] < want {
			t.Errorf("`%s` runs in %d manifests, want at least %d", mode, seen[mode], want)
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
