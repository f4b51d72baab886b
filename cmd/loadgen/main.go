// Command loadgen is a development tool: it measures the worker's delivery
// path from outside the process against a baseline in the same run.
//
// It starts a private redis-server, the worker binary given with -worker
// (the production wiring, in-memory store, logging at the level it would
// have) and itself as the baseline: a plain net/http server doing one Redis
// SET NX PX per request, the floor of any dedupe-on-Redis handler. Then, for
// each connection count, it alternates worker and baseline rounds in pairs
// (worker first in odd pairs, baseline first in even ones, so a noisy
// neighbour hits both), each round posting -n pre-signed deliveries of
// demo.hello over -conns keep-alive connections, and prints per round and in
// a summary: requests/s, p50/p99 latency, the CPU per request of the target
// process and of redis-server (from /proc/<pid>/stat), and the ratios
// worker/baseline.
//
// With -floors three more processes run in the same rounds, to split the
// worker's cost into layers (see floors.go), all on plain net/http: package
// worker's Handler, the guarantees alone (verify, claim with the replay
// nonce, done marker), and the baseline behind the token check. The tool
// then prints each layer against the next.
//
// Deliveries are signed with the QStash signing key before a round starts
// (the dev key unless -signing-key), each with its own message id and jti,
// so the worker runs every one: verify, claim, run, done marker.
//
//	go build -o /tmp/worker ./cmd/worker && go build -o /tmp/loadgen ./cmd/loadgen
//	/tmp/loadgen -worker /tmp/worker -conns 16,64 -pairs 5 -n 20000
//
// Loopback only; the load generator shares the machine with what it
// measures, so compare ratios, not absolute rates.
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/digis/jobworker/internal/freeport"
	"github.com/digis/jobworker/qstashdev"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "-serve-baseline" {
		if err := serveBaseline(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "loadgen baseline:", err)
			os.Exit(1)
		}
		return
	}
	if len(os.Args) > 1 && os.Args[1] == "-serve-floor" {
		if err := serveFloor(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "loadgen floor:", err)
			os.Exit(1)
		}
		return
	}
	cfg, err := parseFlags(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if _, err := run(ctx, cfg, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(1)
	}
}

// config is what the flags say.
type config struct {
	Worker      string   // path of the worker binary
	RedisServer string   // redis-server binary
	Conns       []int    // connection counts, one summary each
	Pairs       int      // worker/baseline round pairs per connection count
	N           int      // deliveries per round
	SigningKey  string   // QSTASH_CURRENT_SIGNING_KEY of the worker
	WorkerEnv   []string // extra KEY=VALUE for the worker
	WorkerLog   string   // where the worker's stderr goes ("" discards it)
	Self        string   // the loadgen binary, run as the baseline (default: this one)
	Before      string   // optional second worker binary (e.g. built from main), measured alongside
	Floors      bool     // also measure the floors (see floors.go)
}

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

func parseFlags(args []string) (config, error) {
	fs := flag.NewFlagSet("loadgen", flag.ContinueOnError)
	var cfg config
	var conns string
	var env listFlag
	fs.StringVar(&cfg.Worker, "worker", "", "path of the worker binary (go build -o /tmp/worker ./cmd/worker); required")
	fs.StringVar(&cfg.RedisServer, "redis-server", "redis-server", "redis-server binary to start a private server with")
	fs.StringVar(&conns, "conns", "16,64", "comma-separated connection counts")
	fs.IntVar(&cfg.Pairs, "pairs", 5, "worker/baseline round pairs per connection count")
	fs.IntVar(&cfg.N, "n", 10000, "deliveries per round")
	fs.StringVar(&cfg.SigningKey, "signing-key", qstashdev.DevCurrentSigningKey, "QStash current signing key the worker is started with")
	fs.Var(&env, "worker-env", "extra KEY=VALUE for the worker's environment (repeatable), e.g. LOG_LEVEL=warn")
	fs.StringVar(&cfg.WorkerLog, "worker-log", "", "file the worker's log goes to (default: discarded)")
	fs.StringVar(&cfg.Before, "before", "", "a second worker binary (e.g. built from main) measured in the same rounds, for an after/before ratio")
	fs.BoolVar(&cfg.Floors, "floors", false, "also measure the worker's layers in the same rounds, on plain net/http: the worker kit, the guarantees alone, and the baseline behind the token check")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	cfg.WorkerEnv = env
	if cfg.Worker == "" {
		return cfg, errors.New("-worker is required")
	}
	for _, s := range strings.Split(conns, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			return cfg, fmt.Errorf("-conns: %q is not a positive number", s)
		}
		cfg.Conns = append(cfg.Conns, n)
	}
	if cfg.Pairs < 1 || cfg.N < 1 {
		return cfg, errors.New("-pairs and -n must be positive")
	}
	return cfg, nil
}

// summary is one connection count's result.
type summary struct {
	Conns                     int
	Worker, Baseline          side
	RatioMin, Ratio, RatioMax float64 // per-pair worker/baseline rates: min, median, max
	// Others are the further targets (-before, -floors), in the order of
	// the table.
	Others []*other
}

// other is a further target's rounds and its per-pair ratio to the
// baseline.
type other struct {
	Name                      string
	Side                      side
	RatioMin, Ratio, RatioMax float64
	ratios                    []float64
}

// other returns the named further target's result, or nil.
func (s *summary) other(name string) *other {
	for _, o := range s.Others {
		if o.Name == name {
			return o
		}
	}
	return nil
}

// side aggregates one target's rounds at one connection count.
type side struct {
	Rates         []float64     // requests/s of each round
	P50, P99      time.Duration // over every round's requests
	CPUPerReq     time.Duration // target process
	RedisPerReq   time.Duration // redis-server
	requests      int
	cpu, redisCPU time.Duration
	lat           []time.Duration
}

func (s *side) add(r roundResult) {
	s.Rates = append(s.Rates, r.rate)
	s.requests += r.n
	s.cpu += r.cpu
	s.redisCPU += r.redisCPU
	s.lat = append(s.lat, r.lat...)
}

func (s *side) finish() {
	slices.Sort(s.lat)
	s.P50, s.P99 = s.lat[len(s.lat)/2], s.lat[len(s.lat)*99/100]
	s.CPUPerReq = s.cpu / time.Duration(s.requests)
	s.RedisPerReq = s.redisCPU / time.Duration(s.requests)
	s.lat = nil
}

func (s *side) medianRate() float64 { return median(s.Rates) }

func median(v []float64) float64 {
	c := slices.Clone(v)
	slices.Sort(c)
	if len(c)%2 == 1 {
		return c[len(c)/2]
	}
	return (c[len(c)/2-1] + c[len(c)/2]) / 2
}

// target is a server under load.
type target struct {
	name string
	addr string // host:port
	pid  int
	msgs atomic.Int64
}

// run starts Redis, the worker and the baseline, runs the rounds and
// prints the results to out.
func run(ctx context.Context, cfg config, out io.Writer) ([]summary, error) {
	dir, err := os.MkdirTemp("", "loadgen-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	var procs []*exec.Cmd
	defer func() {
		for _, p := range procs {
			_ = p.Process.Kill()
			_ = p.Wait()
		}
	}()
	start := func(cmd *exec.Cmd) error {
		if err := cmd.Start(); err != nil {
			return err
		}
		procs = append(procs, cmd)
		return nil
	}

	redisPort, err := freePort()
	if err != nil {
		return nil, err
	}
	rcmd := exec.Command(cfg.RedisServer, "--port", strconv.Itoa(redisPort), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", dir)
	if err := start(rcmd); err != nil {
		return nil, fmt.Errorf("starting redis-server: %w", err)
	}
	redisAddr := "127.0.0.1:" + strconv.Itoa(redisPort)
	if err := waitRedis(ctx, redisAddr); err != nil {
		return nil, err
	}

	startWorker := func(bin, name string) (*target, error) {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		cmd := exec.Command(bin)
		cmd.Env = append([]string{
			"PATH=" + os.Getenv("PATH"),
			"PORT=" + strconv.Itoa(port), "METRICS_ADDR=off",
			"REDIS_URL=redis://" + redisAddr, "WORKER_PUBLIC_URL=http://127.0.0.1:" + strconv.Itoa(port),
			"QSTASH_CURRENT_SIGNING_KEY=" + cfg.SigningKey, "QSTASH_NEXT_SIGNING_KEY=" + qstashdev.DevNextSigningKey,
			"STRIPE_WEBHOOK_SECRET=whsec_loadgen", "QSTASH_TOKEN=unused", "DATABASE_URL=memory",
			"JOBWORKER_ENV=development", "OUTBOX_RELAY=off",
		}, cfg.WorkerEnv...)
		if cfg.WorkerLog != "" {
			f, err := os.OpenFile(cfg.WorkerLog, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
			if err != nil {
				return nil, err
			}
			defer f.Close() // the child has its own descriptor
			cmd.Stderr, cmd.Stdout = f, f
		} // else: nil is /dev/null, so the worker still pays for writing its lines
		if err := start(cmd); err != nil {
			return nil, fmt.Errorf("starting %s: %w", name, err)
		}
		return &target{name: name, addr: "127.0.0.1:" + strconv.Itoa(port), pid: cmd.Process.Pid}, nil
	}
	worker, err := startWorker(cfg.Worker, "worker")
	if err != nil {
		return nil, err
	}
	var before *target
	if cfg.Before != "" {
		if before, err = startWorker(cfg.Before, "before"); err != nil {
			return nil, err
		}
	}

	basePort, err := freePort()
	if err != nil {
		return nil, err
	}
	self := cfg.Self
	if self == "" {
		if self, err = os.Executable(); err != nil {
			return nil, err
		}
	}
	bcmd := exec.Command(self, "-serve-baseline", "127.0.0.1:"+strconv.Itoa(basePort), redisAddr)
	bcmd.Stderr = os.Stderr
	if err := start(bcmd); err != nil {
		return nil, fmt.Errorf("starting the baseline: %w", err)
	}

	base := &target{name: "baseline", addr: "127.0.0.1:" + strconv.Itoa(basePort), pid: bcmd.Process.Pid}
	targets := []*target{worker, base}
	if before != nil {
		targets = append(targets, before)
	}
	if cfg.Floors {
		for _, kind := range floorKinds {
			port, err := freePort()
			if err != nil {
				return nil, err
			}
			addr := "127.0.0.1:" + strconv.Itoa(port)
			cmd := exec.Command(self, "-serve-floor", kind, addr, redisAddr, cfg.SigningKey)
			cmd.Stderr = os.Stderr
			if err := start(cmd); err != nil {
				return nil, fmt.Errorf("starting the %s floor: %w", kind, err)
			}
			targets = append(targets, &target{name: kind, addr: addr, pid: cmd.Process.Pid})
		}
	}
	for _, t := range targets {
		if err := waitHTTP(ctx, "http://"+t.addr+"/healthz"); err != nil {
			return nil, fmt.Errorf("%s did not come up: %w", t.name, err)
		}
	}
	redisPID := rcmd.Process.Pid

	fmt.Fprintf(out, "loadgen: %d deliveries per round, %d pairs, worker pid %d, baseline pid %d, redis-server pid %d\n",
		cfg.N, cfg.Pairs, worker.pid, base.pid, redisPID)
	for _, t := range targets[2:] {
		fmt.Fprintf(out, "loadgen: %s pid %d\n", t.name, t.pid)
	}
	var results []summary
	for _, conns := range cfg.Conns {
		// Warm-up: connections, pools, the script cache, the heap.
		for _, t := range targets {
			if _, err := round(ctx, cfg, t, redisPID, conns, max(cfg.N/5, conns)); err != nil {
				return nil, err
			}
		}
		s := summary{Conns: conns}
		for _, t := range targets[2:] {
			s.Others = append(s.Others, &other{Name: t.name})
		}
		var ratios []float64
		for p := 0; p < cfg.Pairs; p++ {
			// Each target goes first in turn, so a noisy neighbour hits all.
			res := map[*target]roundResult{}
			for i := range targets {
				t := targets[(i+p)%len(targets)]
				r, err := round(ctx, cfg, t, redisPID, conns, cfg.N)
				if err != nil {
					return nil, err
				}
				res[t] = r
			}
			rw, rb := res[worker], res[base]
			s.Worker.add(rw)
			s.Baseline.add(rb)
			ratios = append(ratios, rw.rate/rb.rate)
			line := fmt.Sprintf("conns=%-3d pair %d: %s | %s | ratio %.2f", conns, p+1, rw.describe("worker"), rb.describe("baseline"), rw.rate/rb.rate)
			for i, t := range targets[2:] {
				ro, o := res[t], s.Others[i]
				o.Side.add(ro)
				o.ratios = append(o.ratios, ro.rate/rb.rate)
				line += fmt.Sprintf(" | %s | ratio %.2f", ro.describe(t.name), ro.rate/rb.rate)
			}
			fmt.Fprintln(out, line)
		}
		for _, o := range s.Others {
			o.Side.finish()
			o.Ratio, o.RatioMin, o.RatioMax = median(o.ratios), slices.Min(o.ratios), slices.Max(o.ratios)
		}
		s.Worker.finish()
		s.Baseline.finish()
		s.Ratio, s.RatioMin, s.RatioMax = median(ratios), slices.Min(ratios), slices.Max(ratios)
		results = append(results, s)
	}
	fmt.Fprintln(out)
	fmt.Fprintln(out, "| conns | target | req/s | ratio to baseline (min–max) | p50 / p99 | CPU/req (× baseline) | redis CPU/req |")
	fmt.Fprintln(out, "|---|---|---|---|---|---|---|")
	for _, s := range results {
		row := func(name string, sd *side, r, lo, hi float64) {
			ratio := "—"
			if sd != &s.Baseline {
				ratio = fmt.Sprintf("%.2f (%.2f–%.2f)", r, lo, hi)
			}
			fmt.Fprintf(out, "| %d | %s | %.0f | %s | %.2f / %.2f ms | %.0f µs (%.2f×) | %.1f µs |\n",
				s.Conns, name, sd.medianRate(), ratio, ms(sd.P50), ms(sd.P99),
				us(sd.CPUPerReq), float64(sd.CPUPerReq)/float64(s.Baseline.CPUPerReq), us(sd.RedisPerReq))
		}
		row("worker", &s.Worker, s.Ratio, s.RatioMin, s.RatioMax)
		for _, o := range s.Others {
			row(o.Name, &o.Side, o.Ratio, o.RatioMin, o.RatioMax)
		}
		row("baseline", &s.Baseline, 0, 0, 0)
	}
	// Each layer against the next one down, in the same rounds.
	var lines []string
	layers := [][2]string{{"worker", "before"}, {"worker", floorKit}}
	for i := 1; i < len(floorKinds); i++ {
		layers = append(layers, [2]string{floorKinds[i-1], floorKinds[i]})
	}
	layers = append(layers, [2]string{floorVerified, "baseline"})
	for _, l := range layers {
		for _, s := range results {
			upper, lower := s.layer(l[0]), s.layer(l[1])
			if upper == nil || lower == nil {
				continue
			}
			lines = append(lines, fmt.Sprintf("conns=%d %s/%s: rate %.2f×, CPU per delivery %.2f×, redis CPU per delivery %.2f×",
				s.Conns, l[0], l[1], upper.Ratio/lower.Ratio, float64(upper.Side.CPUPerReq)/float64(lower.Side.CPUPerReq),
				float64(upper.Side.RedisPerReq)/float64(lower.Side.RedisPerReq)))
		}
	}
	if len(lines) > 0 {
		fmt.Fprintln(out)
		fmt.Fprintln(out, strings.Join(lines, "\n"))
	}
	return results, nil
}

// layer is the named target's result as an other, the worker's and the
// baseline's included.
func (s *summary) layer(name string) *other {
	switch name {
	case "worker":
		return &other{Name: name, Side: s.Worker, Ratio: s.Ratio, RatioMin: s.RatioMin, RatioMax: s.RatioMax}
	case "baseline":
		return &other{Name: name, Side: s.Baseline, Ratio: 1, RatioMin: 1, RatioMax: 1}
	}
	return s.other(name)
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

// describe is one round's line for target name.
func (r roundResult) describe(name string) string {
	return fmt.Sprintf("%s %7.0f/s p99 %6.2fms cpu %4.0fµs redis %3.0fµs", name, r.rate, ms(r.p99),
		us(r.cpu/time.Duration(r.n)), us(r.redisCPU/time.Duration(r.n)))
}

type roundResult struct {
	n             int
	rate          float64
	p99           time.Duration
	lat           []time.Duration
	cpu, redisCPU time.Duration
}

// round posts n fresh deliveries to t over conns connections.
func round(ctx context.Context, cfg config, t *target, redisPID, conns, n int) (roundResult, error) {
	reqs, err := signedRequests(cfg.SigningKey, t, n)
	if err != nil {
		return roundResult{}, err
	}
	cpu0, err := processCPU(t.pid)
	if err != nil {
		return roundResult{}, err
	}
	redis0, err := processCPU(redisPID)
	if err != nil {
		return roundResult{}, err
	}
	lat, elapsed, err := send(ctx, t.addr, reqs, conns)
	if err != nil {
		return roundResult{}, fmt.Errorf("%s at %d connections: %w", t.name, conns, err)
	}
	cpu1, err := processCPU(t.pid)
	if err != nil {
		return roundResult{}, err
	}
	redis1, err := processCPU(redisPID)
	if err != nil {
		return roundResult{}, err
	}
	sorted := slices.Clone(lat)
	slices.Sort(sorted)
	return roundResult{
		n: n, rate: float64(n) / elapsed.Seconds(), p99: sorted[len(sorted)*99/100], lat: lat,
		cpu: cpu1 - cpu0, redisCPU: redis1 - redis0,
	}, nil
}

// jobPath is where the deliveries go: the demo job every worker registers.
const jobPath = "/jobs/demo.hello"

var deliveryBody = []byte(`{"name":"loadgen"}`)

// signedRequests renders n complete HTTP/1.1 requests, each a delivery of
// demo.hello with its own message id, signed as QStash signs: HS256 over
// iss, sub, exp, nbf, iat, jti and the padded base64url SHA-256 of the body.
func signedRequests(key string, t *target, n int) ([][]byte, error) {
	url := "http://" + t.addr + jobPath
	sum := sha256.Sum256(deliveryBody)
	bodyHash := base64.URLEncoding.EncodeToString(sum[:])
	header := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`))
	now := time.Now().Unix()
	var run [8]byte
	if _, err := rand.Read(run[:]); err != nil {
		return nil, err
	}
	prefix := hex.EncodeToString(run[:])
	out := make([][]byte, n)
	var buf bytes.Buffer
	for i := range out {
		seq := t.msgs.Add(1)
		claims, err := json.Marshal(map[string]any{
			"iss": "Upstash", "sub": url, "exp": now + 300, "nbf": 0, "iat": now,
			"jti": "jwt_" + prefix + "_" + strconv.FormatInt(seq, 10), "body": bodyHash,
		})
		if err != nil {
			return nil, err
		}
		input := header + "." + base64.RawURLEncoding.EncodeToString(claims)
		mac := hmac.New(sha256.New, []byte(key))
		mac.Write([]byte(input))
		token := input + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
		buf.Reset()
		fmt.Fprintf(&buf, "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n", jobPath, t.addr)
		fmt.Fprintf(&buf, "Upstash-Signature: %s\r\nUpstash-Message-Id: msg_%s_%d\r\nUpstash-Retried: 0\r\n", token, prefix, seq)
		fmt.Fprintf(&buf, "Content-Length: %d\r\n\r\n%s", len(deliveryBody), deliveryBody)
		out[i] = bytes.Clone(buf.Bytes())
	}
	return out, nil
}

// send posts every request over conns keep-alive connections and returns
// each request's latency and the round's wall time. Any answer other than
// 200 fails the round: a rate of refusals measures nothing.
func send(ctx context.Context, addr string, reqs [][]byte, conns int) ([]time.Duration, time.Duration, error) {
	lat := make([]time.Duration, len(reqs))
	var next atomic.Int64
	var firstErr error
	var errOnce sync.Once
	var wg sync.WaitGroup
	start := time.Now()
	for range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &conn{addr: addr}
			defer c.close()
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= len(reqs) {
					return
				}
				t0 := time.Now()
				err := c.do(reqs[i])
				lat[i] = time.Since(t0)
				if err != nil {
					errOnce.Do(func() { firstErr = err })
					next.Store(int64(len(reqs))) // stop the others too
					return
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if firstErr == nil {
		firstErr = ctx.Err()
	}
	return lat, elapsed, firstErr
}

// conn is one keep-alive HTTP/1.1 client connection with a minimal
// response reader: the load generator should spend its CPU on little more
// than the socket.
type conn struct {
	addr string
	nc   net.Conn
	r    *bufio.Reader
}

func (c *conn) close() {
	if c.nc != nil {
		_ = c.nc.Close()
		c.nc = nil
	}
}

func (c *conn) do(req []byte) error {
	if c.nc == nil {
		nc, err := net.Dial("tcp", c.addr)
		if err != nil {
			return err
		}
		c.nc, c.r = nc, bufio.NewReaderSize(nc, 4096)
	}
	if _, err := c.nc.Write(req); err != nil {
		c.close()
		return err
	}
	status, keep, body, err := readResponse(c.r)
	if err != nil {
		c.close()
		return err
	}
	if !keep {
		c.close()
	}
	if status != http.StatusOK {
		return fmt.Errorf("status %d: %.200s", status, body)
	}
	return nil
}

// readResponse reads one response with a Content-Length body (what both
// servers send) and returns its status, whether the connection stays open,
// and the body.
func readResponse(r *bufio.Reader) (status int, keepAlive bool, body []byte, err error) {
	line, err := r.ReadSlice('\n')
	if err != nil {
		return 0, false, nil, err
	}
	// "HTTP/1.1 200 OK\r\n"
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) {
		return 0, false, nil, fmt.Errorf("bad status line %q", line)
	}
	status, err = strconv.Atoi(string(line[9:12]))
	if err != nil {
		return 0, false, nil, fmt.Errorf("bad status line %q", line)
	}
	keepAlive = true
	length := -1
	for {
		h, err := r.ReadSlice('\n')
		if err != nil {
			return 0, false, nil, err
		}
		h = bytes.TrimRight(h, "\r\n")
		if len(h) == 0 {
			break
		}
		name, value, ok := bytes.Cut(h, []byte(":"))
		if !ok {
			continue
		}
		value = bytes.TrimSpace(value)
		switch {
		case bytes.EqualFold(name, []byte("Content-Length")):
			if length, err = strconv.Atoi(string(value)); err != nil {
				return 0, false, nil, fmt.Errorf("bad Content-Length %q", value)
			}
		case bytes.EqualFold(name, []byte("Connection")) && bytes.EqualFold(value, []byte("close")):
			keepAlive = false
		}
	}
	if length < 0 {
		return 0, false, nil, errors.New("answer without Content-Length")
	}
	body = make([]byte, length)
	if _, err := io.ReadFull(r, body); err != nil {
		return 0, false, nil, err
	}
	return status, keepAlive, body, nil
}

// processCPU is the user plus system time pid has used, from
// /proc/<pid>/stat (utime and stime, in clock ticks of 1/100 s: USER_HZ on
// Linux).
func processCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0, fmt.Errorf("reading CPU time (Linux /proc needed): %w", err)
	}
	// The command name is in parentheses and may contain spaces.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("unexpected /proc/%d/stat", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	// After the name: state is field 3 of the file, utime 14, stime 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("unexpected /proc/%d/stat", pid)
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("unexpected /proc/%d/stat", pid)
	}
	const tick = 10 * time.Millisecond
	return time.Duration(ut+st) * tick, nil
}

// freePort is a port for a server this tool starts (see package freeport).
func freePort() (int, error) { return freeport.Pick() }

func waitRedis(ctx context.Context, addr string) error {
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	defer rdb.Close()
	return waitFor(ctx, func() error { return rdb.Ping(ctx).Err() })
}

func waitHTTP(ctx context.Context, url string) error {
	return waitFor(ctx, func() error {
		res, err := http.Get(url)
		if err != nil {
			return err
		}
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			return fmt.Errorf("status %d", res.StatusCode)
		}
		return nil
	})
}

// waitFor polls check until it succeeds, for at most 30 s.
func waitFor(ctx context.Context, check func() error) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		err := check()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %v)", ctx.Err(), err)
		case <-t.C:
		}
	}
}
