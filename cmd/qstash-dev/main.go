// Command qstash-dev runs qstashdev, a local in-memory QStash-compatible
// server, on 127.0.0.1:8080 with the official dev server's public token and
// signing keys.
//
//	go run ./cmd/qstash-dev -time-scale 0.01
//
// Flags override the QSTASH_DEV_* environment variables. The process's
// QSTASH_TOKEN / QSTASH_*_SIGNING_KEY are deliberately not read: they may
// hold real credentials, and this command prints what it uses.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/digis/jobworker/internal/logwriter"
	"github.com/digis/jobworker/qstashdev"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "qstash-dev:", err)
		}
		if errors.Is(err, errUnhealthy) {
			os.Exit(1) // what container health checks read as "unhealthy"
		}
		os.Exit(2)
	}
}

// options are the command's settings after flags and environment.
type options struct {
	addr        string
	cfg         qstashdev.Config
	logLevel    slog.Level
	healthcheck bool
}

func parseOptions(args []string, getenv func(string) string, stderr io.Writer) (options, error) {
	envOr := func(name, def string) string {
		if v := getenv(name); v != "" {
			return v
		}
		return def
	}
	fs := flag.NewFlagSet("qstash-dev", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", envOr("QSTASH_DEV_ADDR", qstashdev.DefaultAddr), "listen address (env QSTASH_DEV_ADDR)")
	port := fs.Int("port", 0, "shortcut for -addr 127.0.0.1:<port>, like the official dev server (env QSTASH_DEV_PORT)")
	token := fs.String("token", envOr("QSTASH_DEV_TOKEN", qstashdev.DevToken), "bearer token clients must send (env QSTASH_DEV_TOKEN)")
	cur := fs.String("current-signing-key", envOr("QSTASH_DEV_CURRENT_SIGNING_KEY", qstashdev.DevCurrentSigningKey), "current signing key (env QSTASH_DEV_CURRENT_SIGNING_KEY)")
	next := fs.String("next-signing-key", envOr("QSTASH_DEV_NEXT_SIGNING_KEY", qstashdev.DevNextSigningKey), "next signing key (env QSTASH_DEV_NEXT_SIGNING_KEY)")
	scale := fs.String("time-scale", envOr("QSTASH_DEV_TIME_SCALE", "1"), "multiplier for waits between delivery attempts, e.g. 0.01 (env QSTASH_DEV_TIME_SCALE)")
	delayScale := fs.String("delay-scale", envOr("QSTASH_DEV_DELAY_SCALE", "1"), "multiplier for delays and not-before times, e.g. 0.01 (env QSTASH_DEV_DELAY_SCALE)")
	dataDir := fs.String("data-dir", envOr("QSTASH_DEV_DATA_DIR", ""), "keep messages, dead letters and schedules in this directory across restarts (env QSTASH_DEV_DATA_DIR); default: memory only")
	maxBody := fs.String("max-body", envOr("QSTASH_DEV_MAX_BODY", "1MiB"), "largest message body: bytes or with KiB/MiB suffix (env QSTASH_DEV_MAX_BODY)")
	anyToken := fs.Bool("allow-any-token", envOr("QSTASH_DEV_ALLOW_ANY_TOKEN", "") == "true", "accept any bearer token (env QSTASH_DEV_ALLOW_ANY_TOKEN=true)")
	queryToken := fs.Bool("allow-query-token", envOr("QSTASH_DEV_ALLOW_QUERY_TOKEN", "") == "true", "accept the token as ?qstash_token= too; any web page can make a browser send a URL (env QSTASH_DEV_ALLOW_QUERY_TOKEN=true)")
	hosts := fs.String("allowed-hosts", envOr("QSTASH_DEV_ALLOWED_HOSTS", ""), "comma-separated Host names answered besides localhost and IP addresses, e.g. a compose service name (env QSTASH_DEV_ALLOWED_HOSTS)")
	health := fs.Bool("healthcheck", false, "probe a running server on -addr (GET /v2/keys with the token) and exit 0 when it answers; for container health checks")
	level := fs.String("log-level", envOr("QSTASH_DEV_LOG_LEVEL", "info"), "debug, info, warn or error (env QSTASH_DEV_LOG_LEVEL)")
	if err := fs.Parse(args); err != nil {
		return options{}, err
	}
	if fs.NArg() > 0 {
		return options{}, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if *port == 0 {
		if p := getenv("QSTASH_DEV_PORT"); p != "" && !flagSet(fs, "addr") {
			n, err := strconv.Atoi(p)
			if err != nil {
				return options{}, fmt.Errorf("QSTASH_DEV_PORT %q: %v", p, err)
			}
			*port = n
		}
	}
	if *port < 0 || *port > 65535 {
		return options{}, fmt.Errorf("invalid port %d", *port)
	}
	if *port > 0 {
		*addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(*port))
	}
	ts, err := strconv.ParseFloat(*scale, 64)
	if err != nil || ts <= 0 {
		return options{}, fmt.Errorf("invalid -time-scale %q: want a number > 0", *scale)
	}
	ds, err := strconv.ParseFloat(*delayScale, 64)
	if err != nil || ds <= 0 {
		return options{}, fmt.Errorf("invalid -delay-scale %q: want a number > 0", *delayScale)
	}
	mb, err := parseSize(*maxBody)
	if err != nil {
		return options{}, fmt.Errorf("invalid -max-body: %v", err)
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*level)); err != nil {
		return options{}, fmt.Errorf("invalid -log-level %q", *level)
	}
	cfg := qstashdev.Config{
		Token: *token, CurrentSigningKey: *cur, NextSigningKey: *next,
		TimeScale: ts, DelayScale: ds, MaxBodyBytes: mb, AllowAnyToken: *anyToken, DataDir: *dataDir,
		AllowQueryToken: *queryToken, AllowedHosts: allowedHosts(*hosts, *addr),
	}
	if err := cfg.Validate(); err != nil {
		return options{}, err
	}
	return options{addr: *addr, cfg: cfg, logLevel: lvl, healthcheck: *health}, nil
}

func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// parseSize reads "1048576", "512KiB", "1MiB" (KB/MB/K/M are read as
// binary units too).
func parseSize(s string) (int64, error) {
	t := strings.TrimSpace(strings.ToUpper(s))
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"KIB", 1 << 10}, {"MIB", 1 << 20}, {"KB", 1 << 10}, {"MB", 1 << 20}, {"K", 1 << 10}, {"M", 1 << 20}, {"B", 1}} {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSpace(strings.TrimSuffix(t, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n <= 0 || n > (1<<40)/mult {
		return 0, fmt.Errorf("%q is not a positive size", s)
	}
	return n * mult, nil
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	opts, err := parseOptions(args, getenv, stderr)
	if err != nil {
		return err
	}
	if opts.healthcheck {
		return probe(ctx, opts.addr, opts.cfg.Token)
	}
	// Buffered (see internal/logwriter): a delivery's lines cost a copy,
	// not a write each. Closed when run returns, after the server drained,
	// so the shutdown's lines are all out before the process exits.
	var log *slog.Logger
	logs := logwriter.New(stderr, logwriter.Config{OnDrop: func(lines uint64) {
		log.Warn("log lines dropped: stderr did not take them fast enough", "lines", lines)
	}})
	defer logs.Close()
	log = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: opts.logLevel}))
	opts.cfg.Logger = log
	srv, err := qstashdev.New(opts.cfg)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", opts.addr)
	if err != nil {
		srv.Close()
		return err
	}
	base := "http://" + ln.Addr().String()
	cur, next := srv.SigningKeys()
	// These are the public dev credentials unless overridden; printing them
	// is what the official dev server does too. The wording matches what the
	// JS SDK waits for ("running at").
	fmt.Fprintf(stdout, `qstash-dev is running at %s

QSTASH_URL=%s
QSTASH_TOKEN=%s
QSTASH_CURRENT_SIGNING_KEY=%s
QSTASH_NEXT_SIGNING_KEY=%s

Retry waits are scaled by %v, delays by %v. Try:
  curl -X POST %s/v2/publish/https://example.com -H "Authorization: Bearer %s"
`, base, base, opts.cfg.Token, cur, next, opts.cfg.TimeScale, opts.cfg.DelayScale, base, opts.cfg.Token)

	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		srv.Close()
		return err
	case <-ctx.Done():
	}
	opts.cfg.Logger.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = srv.Shutdown(sctx)
	if serr := <-errc; serr != nil && !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	return err
}

// errUnhealthy is a failed -healthcheck probe.
var errUnhealthy = errors.New("healthcheck failed")

// probe asks a running server on addr for its keys. A wildcard listen
// address (a container's 0.0.0.0) is probed on loopback.
func probe(ctx context.Context, addr, token string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+net.JoinHostPort(host, port)+"/v2/keys", nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("%w: %w", errUnhealthy, err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("%w: /v2/keys answered %d", errUnhealthy, res.StatusCode)
	}
	return nil
}

// allowedHosts is the -allowed-hosts list plus the host of -addr when it is
// a name (an address needs no entry: IP literals are always answered).
func allowedHosts(list, addr string) []string {
	var out []string
	for _, h := range strings.Split(list, ",") {
		if h = strings.TrimSpace(h); h != "" {
			out = append(out, h)
		}
	}
	if h, _, err := net.SplitHostPort(addr); err == nil && h != "" && net.ParseIP(h) == nil {
		out = append(out, h)
	}
	return out
}
