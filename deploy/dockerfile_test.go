package deploy_test

import (
	"bufio"
	"encoding/json"
	"os"
	"path"
	"regexp"
	"strings"
	"testing"
)

// instruction is one Dockerfile instruction, continuation lines joined.
type instruction struct {
	line int
	cmd  string // upper case: FROM, RUN, COPY, ...
	args string
}

// stage is one FROM ... section.
type stage struct {
	name, base string
	instrs     []instruction
}

// dockerfile is what the tests need to know about a Dockerfile.
type dockerfile struct {
	path   string
	stages []*stage
}

func (d *dockerfile) stage(name string) *stage {
	for _, s := range d.stages {
		if s.name == name {
			return s
		}
	}
	return nil
}

// entrypoint is the exec-form ENTRYPOINT of the stage, nil if none or shell
// form.
func (s *stage) entrypoint() []string {
	var ep []string
	for _, in := range s.instrs {
		if in.cmd == "ENTRYPOINT" {
			ep = nil
			_ = json.Unmarshal([]byte(in.args), &ep)
		}
	}
	return ep
}

func (s *stage) has(cmd string) []instruction {
	var out []instruction
	for _, in := range s.instrs {
		if in.cmd == cmd {
			out = append(out, in)
		}
	}
	return out
}

// env returns the ENV names and values the stage sets (KEY=VALUE form).
func (s *stage) env() map[string]string {
	out := map[string]string{}
	for _, in := range s.has("ENV") {
		for _, kv := range strings.Fields(in.args) {
			k, v, _ := strings.Cut(kv, "=")
			out[k] = v
		}
	}
	return out
}

func parseDockerfile(t *testing.T, p string) *dockerfile {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	d := &dockerfile{path: p}
	sc := bufio.NewScanner(f)
	var cur strings.Builder
	start, n := 0, 0
	flush := func() {
		text := strings.TrimSpace(cur.String())
		cur.Reset()
		if text == "" {
			return
		}
		cmd, args, _ := strings.Cut(text, " ")
		in := instruction{line: start, cmd: strings.ToUpper(cmd), args: strings.TrimSpace(args)}
		if in.cmd == "FROM" {
			s := &stage{}
			fields := strings.Fields(in.args)
			for len(fields) > 0 && strings.HasPrefix(fields[0], "--") {
				fields = fields[1:]
			}
			if len(fields) > 0 {
				s.base = fields[0]
			}
			if len(fields) == 3 && strings.EqualFold(fields[1], "AS") {
				s.name = fields[2]
			}
			d.stages = append(d.stages, s)
		}
		if len(d.stages) > 0 {
			last := d.stages[len(d.stages)-1]
			last.instrs = append(last.instrs, in)
		}
	}
	for sc.Scan() {
		n++
		line := sc.Text()
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "#") {
			continue // comments (and parser directives) may sit inside continuations
		}
		if cur.Len() == 0 {
			start = n
		}
		if strings.HasSuffix(trimmed, `\`) {
			cur.WriteString(strings.TrimSpace(strings.TrimSuffix(trimmed, `\`)) + " ")
			continue
		}
		cur.WriteString(trimmed)
		flush()
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	flush()
	return d
}

// goBuild is the `go build` command of a Dockerfile's build stage.
type goBuild struct {
	flags    []string // e.g. -trimpath, -ldflags=-s -w
	packages []string // ./cmd/api ...
	stage    *stage
}

var goBuildRe = regexp.MustCompile(`go build (.*)$`)

func findGoBuild(t *testing.T, d *dockerfile) goBuild {
	t.Helper()
	for _, s := range d.stages {
		for _, in := range s.has("RUN") {
			m := goBuildRe.FindStringSubmatch(in.args)
			if m == nil {
				continue
			}
			gb := goBuild{stage: s}
			args := shellWords(m[1])
			for i := 0; i < len(args); i++ {
				a := args[i]
				switch {
				case a == "-o":
					i++ // the output directory
				case strings.HasPrefix(a, "-"):
					gb.flags = append(gb.flags, a)
				default:
					gb.packages = append(gb.packages, a)
				}
			}
			return gb
		}
	}
	t.Fatalf("%s: no RUN ... go build", d.path)
	return goBuild{}
}

// shellWords splits a command line on blanks, honouring double quotes (all
// the Dockerfiles use).
func shellWords(s string) []string {
	var out []string
	var cur strings.Builder
	inQuote, inWord := false, false
	for _, r := range s {
		switch {
		case r == '"':
			inQuote, inWord = !inQuote, true
		case (r == ' ' || r == '\t') && !inQuote:
			if inWord {
				out = append(out, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteRune(r)
			inWord = true
		}
	}
	if inWord {
		out = append(out, cur.String())
	}
	return out
}

var dockerfiles = []string{"Dockerfile", "lambda/Dockerfile"}

// finalStages are the stages that become images: those with an ENTRYPOINT.
func finalStages(d *dockerfile) []*stage {
	var out []*stage
	for _, s := range d.stages {
		if len(s.has("ENTRYPOINT")) > 0 {
			out = append(out, s)
		}
	}
	return out
}

func TestDockerfileRules(t *testing.T) {
	t.Parallel()
	for _, p := range dockerfiles {
		t.Run(p, func(t *testing.T) {
			t.Parallel()
			d := parseDockerfile(t, p)
			for _, s := range d.stages {
				if s.name == "" {
					t.Errorf("%s: stage FROM %s has no AS name", p, s.base)
				}
			}
			gb := findGoBuild(t, d)
			if !strings.HasPrefix(gb.stage.base, "golang:") {
				t.Errorf("%s: go build runs in %s, want a golang image", p, gb.stage.base)
			}
			if gb.stage.env()["CGO_ENABLED"] != "0" {
				t.Errorf("%s: build stage %q does not set ENV CGO_ENABLED=0", p, gb.stage.name)
			}
			for _, want := range []string{"-trimpath", "-ldflags=-s -w"} {
				if !contains(gb.flags, want) {
					t.Errorf("%s: go build flags %q lack %q", p, gb.flags, want)
				}
			}
			finals := finalStages(d)
			if len(finals) == 0 {
				t.Fatalf("%s: no runtime stage with an ENTRYPOINT", p)
			}
			for _, s := range finals {
				if !strings.HasPrefix(s.base, "gcr.io/distroless/static") && s.base != "scratch" {
					t.Errorf("%s: stage %s runs on %s, want distroless/static or scratch", p, s.name, s.base)
				}
				if len(s.has("RUN")) > 0 {
					t.Errorf("%s: stage %s has RUN: a runtime image has no shell", p, s.name)
				}
				users := s.has("USER")
				if len(users) == 0 {
					t.Errorf("%s: stage %s sets no USER", p, s.name)
				} else if u := strings.SplitN(users[len(users)-1].args, ":", 2)[0]; u == "root" || u == "0" || u == "" {
					t.Errorf("%s: stage %s runs as %q", p, s.name, users[len(users)-1].args)
				}
				for _, cmd := range []string{"ENTRYPOINT", "CMD"} {
					for _, in := range s.has(cmd) {
						var v []string
						if json.Unmarshal([]byte(in.args), &v) != nil {
							t.Errorf("%s:%d: %s must be exec form (a JSON array): no shell to run it", p, in.line, cmd)
						}
					}
				}
				ep := s.entrypoint()
				if len(ep) == 0 {
					continue
				}
				// The entrypoint is a binary this Dockerfile builds and copies in.
				bin := path.Base(ep[0])
				if !contains(gb.packages, "./cmd/"+bin) {
					t.Errorf("%s: stage %s runs %s, which go build %q does not build", p, s.name, ep[0], gb.packages)
				}
				copied := false
				for _, in := range s.has("COPY") {
					f := strings.Fields(in.args)
					if len(f) >= 3 && f[0] == "--from="+gb.stage.name && path.Base(f[1]) == bin && f[2] == ep[0] {
						copied = true
					}
				}
				if !copied {
					t.Errorf("%s: stage %s does not COPY --from=%s the %s binary to %s", p, s.name, gb.stage.name, bin, ep[0])
				}
			}
		})
	}
}

func TestLambdaDockerfileHasAdapter(t *testing.T) {
	t.Parallel()
	d := parseDockerfile(t, "lambda/Dockerfile")
	for _, s := range finalStages(d) {
		found := false
		for _, in := range s.has("COPY") {
			f := strings.Fields(in.args)
			if len(f) == 3 && strings.HasPrefix(f[0], "--from=public.ecr.aws/awsguru/aws-lambda-adapter:") &&
				f[1] == "/lambda-adapter" && f[2] == "/opt/extensions/lambda-adapter" {
				found = true
				if strings.HasSuffix(f[0], ":latest") {
					t.Errorf("stage %s: pin the adapter version, not latest", s.name)
				}
			}
		}
		if !found {
			t.Errorf("stage %s does not install the Lambda Web Adapter in /opt/extensions", s.name)
		}
		if s.env()["AWS_LWA_READINESS_CHECK_PATH"] != "/readyz" {
			t.Errorf("stage %s: AWS_LWA_READINESS_CHECK_PATH is not /readyz", s.name)
		}
	}
}

func TestDockerfileParser(t *testing.T) {
	t.Parallel()
	if got := shellWords(`-trimpath -ldflags="-s -w" -o /out/ ./cmd/a`); strings.Join(got, "|") != "-trimpath|-ldflags=-s -w|-o|/out/|./cmd/a" {
		t.Fatalf("shellWords = %q", got)
	}
	dir := t.TempDir()
	p := dir + "/Dockerfile"
	src := "# syntax=docker/dockerfile:1\nFROM --platform=$BUILDPLATFORM golang:1 AS b\nRUN a \\\n  # comment\n  b\nFROM scratch AS final\nENTRYPOINT [\"/x\"]\n"
	if err := os.WriteFile(p, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	d := parseDockerfile(t, p)
	if len(d.stages) != 2 || d.stages[0].base != "golang:1" || d.stages[0].name != "b" || d.stage("final") == nil {
		t.Fatalf("stages: %+v", d.stages)
	}
	if runs := d.stages[0].has("RUN"); len(runs) != 1 || runs[0].args != "a b" {
		t.Fatalf("RUN: %+v", runs)
	}
	if ep := d.stage("final").entrypoint(); len(ep) != 1 || ep[0] != "/x" {
		t.Fatalf("entrypoint %q", ep)
	}
}
