package env_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/digis/jobworker/internal/env"
)

func getenv(m map[string]string) env.Getenv { return func(k string) string { return m[k] } }

func TestReaderKeepsTheFirstError(t *testing.T) {
	t.Parallel()
	r := env.NewReader(getenv(map[string]string{"A": "soon", "B": "x"}))
	if d := r.Duration("A", time.Second); d != time.Second {
		t.Fatalf("a bad duration gives %s, want the default", d)
	}
	r.Port("B", 1)
	var e *env.Error
	if !errors.As(r.Err(), &e) || e.Var != "A" || strings.Contains(e.Error(), "\n") {
		t.Fatalf("Err = %v, want one line naming A", r.Err())
	}
}

func TestReaderValues(t *testing.T) {
	t.Parallel()
	r := env.NewReader(getenv(map[string]string{
		"U": "https://w.example.com/base/", "S": "s3cret", "B": "512KiB", "T": "true", "O": "TEXT", "Z": "0s",
	}))
	if got := r.URL("U", ""); got != "https://w.example.com/base" {
		t.Errorf("URL = %q", got)
	}
	if got := r.Secret("S"); got != "s3cret" {
		t.Errorf("Secret = %q", got)
	}
	if got := r.Bytes("B", 0); got != 512<<10 {
		t.Errorf("Bytes = %d", got)
	}
	if !r.Bool("T") || r.Bool("unset") {
		t.Error("Bool")
	}
	if got := r.OneOf("O", "json", "json", "text"); got != "text" {
		t.Errorf("OneOf = %q", got)
	}
	if got := r.DurationOrZero("Z", time.Second); got != 0 {
		t.Errorf("DurationOrZero = %s", got)
	}
	if r.Err() != nil {
		t.Fatal(r.Err())
	}
}

func TestReaderRefusals(t *testing.T) {
	t.Parallel()
	for name, read := range map[string]func(r *env.Reader){
		"URL with credentials": func(r *env.Reader) { r.URL("V", "") },
		"padded secret":        func(r *env.Reader) { r.Secret("V") },
		"zero duration":        func(r *env.Reader) { r.Duration("V", time.Second) },
		"size unit":            func(r *env.Reader) { r.Bytes("V", 1) },
		"not a bool":           func(r *env.Reader) { r.Bool("V") },
		"not allowed":          func(r *env.Reader) { r.OneOf("V", "a", "a", "b") },
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			value := map[string]string{
				"URL with credentials": "https://user:hunter2@w.example.com", "padded secret": " hunter2 ",
				"zero duration": "0s", "size unit": "1MB", "not a bool": "yes please", "not allowed": "c",
			}[name]
			r := env.NewReader(getenv(map[string]string{"V": value}))
			read(r)
			var e *env.Error
			if !errors.As(r.Err(), &e) || e.Var != "V" {
				t.Fatalf("Err = %v, want an error naming V", r.Err())
			}
			if strings.Contains(r.Err().Error(), "hunter2") {
				t.Fatalf("the error echoes a secret: %v", r.Err())
			}
		})
	}
}

func TestMetricsSettings(t *testing.T) {
	t.Parallel()
	base := map[string]string{"REDIS_URL": "redis://127.0.0.1:6379", "PORT": "8080"}
	read := func(over map[string]string) (env.Common, error) {
		m := map[string]string{}
		for k, v := range base {
			m[k] = v
		}
		for k, v := range over {
			m[k] = v
		}
		r := env.NewReader(getenv(m))
		c := r.Common(3000, 9300)
		return c, r.Err()
	}
	for _, tt := range []struct {
		name       string
		given      map[string]string
		wantAddr   string
		wantToken  string
		wantErrVar string
	}{
		{"default: its own port", nil, ":9300", "", ""},
		{"explicit", map[string]string{"METRICS_ADDR": "127.0.0.1:9464"}, "127.0.0.1:9464", "", ""},
		{"off", map[string]string{"METRICS_ADDR": "off"}, "", "", ""},
		{"token", map[string]string{"METRICS_TOKEN": "0123456789abcdef"}, ":9300", "0123456789abcdef", ""},
		{"the serving port", map[string]string{"METRICS_ADDR": ":8080"}, "", "", "METRICS_ADDR"},
		{"no port", map[string]string{"METRICS_ADDR": "localhost"}, "", "", "METRICS_ADDR"},
		{"short token", map[string]string{"METRICS_TOKEN": "hunter2"}, "", "", "METRICS_TOKEN"},
		{"padded token", map[string]string{"METRICS_TOKEN": "0123456789abcdef\n"}, "", "", "METRICS_TOKEN"},
	} {
		c, err := read(tt.given)
		if tt.wantErrVar != "" {
			var e *env.Error
			if !errors.As(err, &e) || e.Var != tt.wantErrVar || strings.Contains(err.Error(), "hunter2") || strings.Contains(err.Error(), "\n") {
				t.Fatalf("%s: %v, want one line naming %s", tt.name, err, tt.wantErrVar)
			}
			continue
		}
		if err != nil || c.MetricsAddr != tt.wantAddr || c.MetricsToken != tt.wantToken {
			t.Fatalf("%s: %q %q %v", tt.name, c.MetricsAddr, c.MetricsToken, err)
		}
	}
}
