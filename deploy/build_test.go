package deploy_test

import (
	"bufio"
	"context"
	"debug/elf"
	"encoding/json"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

var (
	buildDir  string
	buildOnce sync.Once
	buildErr  string
	builtBins map[string]string // binary name → path
	buildSkip []string          // packages not written yet
)

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		_ = os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// packageWritten reports whether a ./cmd/x directory has Go files yet (the
// Dockerfile may name a binary another issue is still writing).
func packageWritten(pkg string) bool {
	m, _ := filepath.Glob(filepath.Join(repoRoot, filepath.FromSlash(pkg), "*.go"))
	for _, f := range m {
		if !strings.HasSuffix(f, "_test.go") {
			return true
		}
	}
	return false
}

// buildStatic builds the binaries exactly as deploy/Dockerfile does (its go
// build flags and packages, CGO_ENABLED=0), once per test binary.
func buildStatic(t testing.TB, gb goBuild) map[string]string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "deploy-static-")
		if err != nil {
			buildErr = err.Error()
			return
		}
		buildDir = dir
		var pkgs []string
		for _, p := range gb.packages {
			if packageWritten(p) {
				pkgs = append(pkgs, p)
			} else {
				buildSkip = append(buildSkip, p)
			}
		}
		args := append([]string{"build"}, gb.flags...)
		args = append(args, "-o", dir+string(filepath.Separator))
		args = append(args, pkgs...)
		cmd := exec.Command("go", args...)
		cmd.Dir = repoRoot
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = "go " + strings.Join(args, " ") + ": " + err.Error() + "\n" + string(out)
			return
		}
		builtBins = map[string]string{}
		for _, p := range pkgs {
			builtBins[path.Base(p)] = filepath.Join(dir, path.Base(p))
		}
	})
	if buildErr != "" {
		t.Fatal(buildErr)
	}
	if len(buildSkip) > 0 {
		msg := "not written yet, not built: " + strings.Join(buildSkip, ", ")
		if os.Getenv("CI") == "true" {
			t.Fatal("the Dockerfile builds packages that do not exist: " + strings.Join(buildSkip, ", "))
		}
		t.Log(msg)
	}
	return builtBins
}

func TestStaticBinaries(t *testing.T) {
	t.Parallel()
	gb := findGoBuild(t, parseDockerfile(t, "Dockerfile"))
	bins := buildStatic(t, gb)
	for _, want := range []string{"api", "worker"} {
		if bins[want] == "" {
			t.Errorf("%s was not built", want)
		}
	}
	for name, p := range bins {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			f, err := elf.Open(p)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			for _, prog := range f.Progs {
				if prog.Type == elf.PT_INTERP {
					t.Error("has a PT_INTERP program header: dynamically linked, will not run on distroless/static")
				}
			}
			if libs, err := f.ImportedLibraries(); err != nil || len(libs) > 0 {
				t.Errorf("needs shared libraries %v (%v)", libs, err)
			}
			if f.Section(".symtab") != nil {
				t.Error("has a symbol table: -ldflags=-s did not apply")
			}
			fi, _ := os.Stat(p)
			t.Logf("%s: %.1f MiB, static, stripped", name, float64(fi.Size())/(1<<20))
		})
	}
}

// dockerignore is the root .dockerignore, in order.
func dockerignore(t *testing.T) []string {
	t.Helper()
	f, err := os.Open(filepath.Join(repoRoot, ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var pats []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); l != "" && !strings.HasPrefix(l, "#") {
			pats = append(pats, l)
		}
	}
	return pats
}

// ignored reports whether Docker leaves rel (slash-separated, relative to the
// context) out of the build context: the last matching pattern wins, and a
// pattern matching a parent directory covers everything below it. Enough of
// Docker's rules for the patterns this repository uses.
func ignored(pats []string, rel string) bool {
	parts := strings.Split(rel, "/")
	out := false
	for _, p := range pats {
		neg := strings.HasPrefix(p, "!")
		p = strings.TrimPrefix(p, "!")
		if matchIgnore(p, parts) {
			out = !neg
		}
	}
	return out
}

func matchIgnore(p string, parts []string) bool {
	for end := 1; end <= len(parts); end++ {
		prefix := parts[:end]
		if rest, ok := strings.CutPrefix(p, "**/"); ok {
			for start := 0; start < end; start++ {
				if m, _ := path.Match(rest, strings.Join(prefix[start:], "/")); m {
					return true
				}
			}
		} else if m, _ := path.Match(p, strings.Join(prefix, "/")); m {
			return true
		}
	}
	return false
}

func TestDockerignoreKeepsBuildInputs(t *testing.T) {
	t.Parallel()
	pats := dockerignore(t)
	for _, tt := range []struct {
		rel  string
		want bool
	}{
		{"go.mod", false}, {"cmd/api/main.go", false}, {"internal/store/migrations/001.sql", false},
		{".git/HEAD", true}, {"qstashdev/testdata/jssdk/x.js", true}, {"jobs/client_test.go", true}, {"deploy/compose.yaml", true},
	} {
		if got := ignored(pats, tt.rel); got != tt.want {
			t.Errorf("ignored(%s) = %v, want %v", tt.rel, got, tt.want)
		}
	}
	// Every file the image build reads: go.mod, go.sum, and the Go and
	// embedded files of each built package and its in-module dependencies.
	gb := findGoBuild(t, parseDockerfile(t, "Dockerfile"))
	var pkgs []string
	for _, p := range gb.packages {
		if packageWritten(p) {
			pkgs = append(pkgs, p)
		}
	}
	cmd := exec.Command("go", append([]string{"list", "-deps", "-json=Dir,GoFiles,EmbedFiles,Module"}, pkgs...)...)
	cmd.Dir = repoRoot
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	root, _ := filepath.Abs(repoRoot)
	needed := []string{"go.mod", "go.sum"}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for dec.More() {
		var p struct {
			Dir                 string
			GoFiles, EmbedFiles []string
			Module              *struct{ Main bool }
		}
		if err := dec.Decode(&p); err != nil {
			t.Fatal(err)
		}
		if p.Module == nil || !p.Module.Main {
			continue
		}
		rel, _ := filepath.Rel(root, p.Dir)
		for _, f := range append(p.GoFiles, p.EmbedFiles...) {
			needed = append(needed, filepath.ToSlash(filepath.Join(rel, f)))
		}
	}
	if len(needed) < 10 {
		t.Fatalf("only %d build inputs found", len(needed))
	}
	for _, f := range needed {
		if ignored(pats, f) {
			t.Errorf(".dockerignore leaves %s out of the build context", f)
		}
	}
}

// TestHealthcheckMode: compose's health checks run "<binary> -healthcheck"
// (no curl in distroless). With nothing listening on PORT it must fail fast
// with exit code 1, not start a server.
func TestHealthcheckMode(t *testing.T) {
	t.Parallel()
	bins := buildStatic(t, findGoBuild(t, parseDockerfile(t, "Dockerfile")))
	for name, bin := range bins {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			port := strconv.Itoa(freePort(t))
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, bin, "-healthcheck")
			cmd.Env = []string{"PORT=" + port, "QSTASH_DEV_ADDR=127.0.0.1:" + port}
			out, err := cmd.CombinedOutput()
			code := cmd.ProcessState.ExitCode()
			if ctx.Err() != nil || code != 1 {
				t.Fatalf("%s -healthcheck with nothing listening: exit %d (%v), want 1\n%s", name, code, err, out)
			}
		})
	}
}
