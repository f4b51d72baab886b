package main

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/digis/jobworker/qstashdev"
)

func TestParseOptions(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		check   func(t *testing.T, o options)
		wantErr bool
	}{
		{name: "defaults", check: func(t *testing.T, o options) {
			c := o.cfg
			if o.addr != "127.0.0.1:8080" || c.Token != qstashdev.DevToken || c.CurrentSigningKey != qstashdev.DevCurrentSigningKey ||
				c.NextSigningKey != qstashdev.DevNextSigningKey || c.TimeScale != 1 || c.MaxBodyBytes != 1<<20 {
				t.Errorf("defaults %+v", c)
			}
		}},
		{name: "env", env: map[string]string{"QSTASH_DEV_ADDR": "127.0.0.1:9999", "QSTASH_DEV_TIME_SCALE": "0.01", "QSTASH_DEV_MAX_BODY": "2MiB", "QSTASH_DEV_TOKEN": "tok"},
			check: func(t *testing.T, o options) {
				if o.addr != "127.0.0.1:9999" || o.cfg.TimeScale != 0.01 || o.cfg.MaxBodyBytes != 2<<20 || o.cfg.Token != "tok" {
					t.Errorf("%+v", o.cfg)
				}
			}},
		{name: "flags win over env", args: []string{"-addr", "127.0.0.1:7000", "-time-scale", "0.5", "-max-body", "4096", "-current-signing-key", "sig_a", "-next-signing-key", "sig_b"},
			env: map[string]string{"QSTASH_DEV_ADDR": "127.0.0.1:9999", "QSTASH_DEV_TIME_SCALE": "0.01"},
			check: func(t *testing.T, o options) {
				if o.addr != "127.0.0.1:7000" || o.cfg.TimeScale != 0.5 || o.cfg.MaxBodyBytes != 4096 || o.cfg.CurrentSigningKey != "sig_a" || o.cfg.NextSigningKey != "sig_b" {
					t.Errorf("%+v", o.cfg)
				}
			}},
		{name: "port shortcut", args: []string{"-port", "8181"}, check: func(t *testing.T, o options) {
			if o.addr != "127.0.0.1:8181" {
				t.Errorf("addr %s", o.addr)
			}
		}},
		{name: "real QStash env ignored", env: map[string]string{"QSTASH_TOKEN": "prod", "QSTASH_CURRENT_SIGNING_KEY": "sig_prod"}, check: func(t *testing.T, o options) {
			if o.cfg.Token != qstashdev.DevToken || o.cfg.CurrentSigningKey != qstashdev.DevCurrentSigningKey {
				t.Errorf("picked up production env: %+v", o.cfg)
			}
		}},
		{name: "guard defaults", check: func(t *testing.T, o options) {
			if o.cfg.AllowQueryToken || len(o.cfg.AllowedHosts) != 0 {
				t.Errorf("query token %v, hosts %q", o.cfg.AllowQueryToken, o.cfg.AllowedHosts)
			}
		}},
		{name: "allowed hosts and query token from env", env: map[string]string{"QSTASH_DEV_ALLOWED_HOSTS": "qstash-dev, qstash.local", "QSTASH_DEV_ALLOW_QUERY_TOKEN": "true"},
			check: func(t *testing.T, o options) {
				if !o.cfg.AllowQueryToken || strings.Join(o.cfg.AllowedHosts, ",") != "qstash-dev,qstash.local" {
					t.Errorf("query token %v, hosts %q", o.cfg.AllowQueryToken, o.cfg.AllowedHosts)
				}
			}},
		{name: "a named listen host is allowed", args: []string{"-addr", "devbox:8080", "-allowed-hosts", "a", "-allow-query-token"},
			check: func(t *testing.T, o options) {
				if !o.cfg.AllowQueryToken || strings.Join(o.cfg.AllowedHosts, ",") != "a,devbox" {
					t.Errorf("query token %v, hosts %q", o.cfg.AllowQueryToken, o.cfg.AllowedHosts)
				}
			}},
		{name: "data dir and delay scale", args: []string{"-data-dir", "/tmp/q", "-delay-scale", "0.01"}, check: func(t *testing.T, o options) {
			if o.cfg.DataDir != "/tmp/q" || o.cfg.DelayScale != 0.01 {
				t.Errorf("%+v", o.cfg)
			}
		}},
		{name: "data dir from env", env: map[string]string{"QSTASH_DEV_DATA_DIR": "/tmp/e", "QSTASH_DEV_DELAY_SCALE": "0.5"}, check: func(t *testing.T, o options) {
			if o.cfg.DataDir != "/tmp/e" || o.cfg.DelayScale != 0.5 {
				t.Errorf("%+v", o.cfg)
			}
		}},
		{name: "bad delay scale", args: []string{"-delay-scale", "-1"}, wantErr: true},
		{name: "bad time scale", args: []string{"-time-scale", "0"}, wantErr: true},
		{name: "bad max body", args: []string{"-max-body", "lots"}, wantErr: true},
		{name: "bad log level", args: []string{"-log-level", "loud"}, wantErr: true},
		{name: "stray argument", args: []string{"serve"}, wantErr: true},
		{name: "unknown flag", args: []string{"-nope"}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			o, err := parseOptions(tt.args, func(k string) string { return tt.env[k] }, io.Discard)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if tt.check != nil {
				tt.check(t, o)
			}
		})
	}
}

func TestRunServesAndShutsDown(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"-addr", "127.0.0.1:0", "-log-level", "error"}, func(string) string { return "" }, pw, io.Discard)
		pw.Close()
	}()
	sc := bufio.NewScanner(pr)
	var base string
	var banner []string
	for sc.Scan() {
		line := sc.Text()
		banner = append(banner, line)
		if u, ok := strings.CutPrefix(line, "qstash-dev is running at "); ok {
			base = u
		}
		if strings.HasPrefix(line, "QSTASH_NEXT_SIGNING_KEY=") {
			break
		}
	}
	go io.Copy(io.Discard, pr)
	text := strings.Join(banner, "\n")
	if base == "" || !strings.Contains(text, "QSTASH_TOKEN="+qstashdev.DevToken) || !strings.Contains(text, qstashdev.DevCurrentSigningKey) {
		t.Fatalf("banner:\n%s", text)
	}
	req, _ := http.NewRequest("GET", base+"/v2/keys", nil)
	req.Header.Set("Authorization", "Bearer "+qstashdev.DevToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), qstashdev.DevNextSigningKey) {
		t.Fatalf("keys: %d %s", resp.StatusCode, body)
	}
	// -healthcheck probes the running server.
	addr := strings.TrimPrefix(base, "http://")
	if err := run(ctx, []string{"-addr", addr, "-healthcheck"}, func(string) string { return "" }, io.Discard, io.Discard); err != nil {
		t.Fatalf("-healthcheck against a running server: %v", err)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run did not return after cancel")
	}
}
