package qstashdev

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"
)

// Server is an in-memory QStash-compatible server. Create it with New, serve
// its Handler (or call Serve / ListenAndServe), and stop it with Shutdown or
// Close. All methods are safe for concurrent use.
type Server struct {
	cfg    Config
	log    *slog.Logger
	client *http.Client

	// mu guards everything below. Deliveries run outside it; they take it
	// only to record their outcome.
	mu         sync.Mutex
	curKey     string
	nextKey    string
	seq        uint64
	messages   map[string]*message
	pending    int
	dedup      map[string]*dedupEntry
	dedupOrder []*dedupEntry
	queues     map[string]*queue
	flows      map[string]*flowKey
	topics     map[string]*topic
	schedules  map[string]*schedule
	dlq        dlqStore
	events     eventLog
	timers     timerHeap
	closed     bool
	httpSrv    *http.Server

	wake     chan struct{}
	stop     chan struct{}
	loopDone chan struct{}
	stopOnce sync.Once

	// deliveries counts running delivery goroutines so shutdown can wait.
	deliveries sync.WaitGroup
	// baseCtx is the parent of every delivery; cancelled by Close.
	baseCtx    context.Context
	cancelBase context.CancelFunc
}

// New validates cfg, applies defaults and starts the scheduler. The returned
// Server does not listen anywhere until Serve or ListenAndServe is called;
// its Handler can be mounted on any http.Server or httptest.Server.
func New(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("qstashdev: invalid config: %w", err)
	}
	cfg = cfg.withDefaults()
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{
		cfg:        cfg,
		log:        cfg.Logger,
		client:     cfg.HTTPClient,
		curKey:     cfg.CurrentSigningKey,
		nextKey:    cfg.NextSigningKey,
		messages:   map[string]*message{},
		dedup:      map[string]*dedupEntry{},
		queues:     map[string]*queue{},
		flows:      map[string]*flowKey{},
		topics:     map[string]*topic{},
		schedules:  map[string]*schedule{},
		dlq:        newDLQStore(cfg.MaxDLQMessages),
		events:     eventLog{max: cfg.MaxEvents},
		wake:       make(chan struct{}, 1),
		stop:       make(chan struct{}),
		loopDone:   make(chan struct{}),
		baseCtx:    ctx,
		cancelBase: cancel,
	}
	go s.loop()
	return s, nil
}

// Handler returns the HTTP handler serving the QStash API.
func (s *Server) Handler() http.Handler { return http.HandlerFunc(s.serveHTTP) }

// Config returns the effective configuration (defaults applied).
func (s *Server) Config() Config { return s.cfg }

// SigningKeys returns the keys in force (they change on rotation).
func (s *Server) SigningKeys() (current, next string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.curKey, s.nextKey
}

// Serve serves the API on ln until Shutdown or Close. It returns
// http.ErrServerClosed after a clean stop.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		ln.Close() // like http.Server.Serve, always close the listener
		return http.ErrServerClosed
	}
	if s.httpSrv != nil {
		s.mu.Unlock()
		ln.Close()
		return errors.New("qstashdev: Serve called twice")
	}
	hs := &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	s.httpSrv = hs
	s.mu.Unlock()
	return hs.Serve(ln)
}

// ListenAndServe listens on Config.Addr and serves until ctx is done, then
// shuts down gracefully (waiting up to 10 s for in-flight deliveries).
func (s *Server) ListenAndServe(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return err
	}
	errc := make(chan error, 1)
	go func() { errc <- s.Serve(ln) }()
	select {
	case err := <-errc:
		s.Close()
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = s.Shutdown(sctx)
	if serr := <-errc; serr != nil && !errors.Is(serr, http.ErrServerClosed) {
		return serr
	}
	return err
}

// Shutdown stops accepting API requests and starting deliveries, stops the
// scheduler, and waits for in-flight deliveries to finish until ctx is done;
// then it cancels those still running. Pending messages are dropped (the
// server is in-memory).
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closed = true
	hs := s.httpSrv
	s.mu.Unlock()
	s.stopOnce.Do(func() { close(s.stop) })
	<-s.loopDone
	var err error
	if hs != nil {
		err = hs.Shutdown(ctx)
	}
	done := make(chan struct{})
	go func() { s.deliveries.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		s.cancelBase()
		<-done
		err = errors.Join(err, ctx.Err())
	}
	s.cancelBase()
	s.client.CloseIdleConnections()
	return err
}

// Close stops the server at once: in-flight deliveries are cancelled and
// awaited, the listener (if any) is closed.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	hs := s.httpSrv
	s.mu.Unlock()
	s.stopOnce.Do(func() { close(s.stop) })
	<-s.loopDone
	s.cancelBase()
	var err error
	if hs != nil {
		err = hs.Close()
	}
	s.deliveries.Wait()
	s.client.CloseIdleConnections()
	return err
}

// --- scheduler -----------------------------------------------------------

type timerKind uint8

const (
	timerMessage  timerKind = iota // a message's next attempt is due
	timerFlow                      // a flow-control rate window ends
	timerSchedule                  // a cron schedule fires
)

type timerItem struct {
	at   time.Time // monotonic
	seq  uint64
	kind timerKind
	msg  *message
	flow *flowKey
	sch  *schedule
	idx  int
}

// timerHeap is a min-heap by due time, ties broken by insertion order so
// messages due together stay FIFO.
type timerHeap []*timerItem

func (h timerHeap) Len() int { return len(h) }
func (h timerHeap) Less(i, j int) bool {
	if h[i].at.Equal(h[j].at) {
		return h[i].seq < h[j].seq
	}
	return h[i].at.Before(h[j].at)
}
func (h timerHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i]; h[i].idx = i; h[j].idx = j }
func (h *timerHeap) Push(x any) {
	it := x.(*timerItem)
	it.idx = len(*h)
	*h = append(*h, it)
}
func (h *timerHeap) Pop() any {
	old := *h
	it := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	it.idx = -1
	return it
}

// addTimer schedules it; the caller holds s.mu.
func (s *Server) addTimer(it *timerItem) {
	s.seq++
	it.seq = s.seq
	heap.Push(&s.timers, it)
	if it.idx == 0 {
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
}

// removeTimer unschedules it if still pending; the caller holds s.mu.
func (s *Server) removeTimer(it *timerItem) {
	if it != nil && it.idx >= 0 && it.idx < len(s.timers) && s.timers[it.idx] == it {
		heap.Remove(&s.timers, it.idx)
	}
}

// loop is the one scheduler goroutine: it sleeps until the earliest timer is
// due (or a new earlier one is added), fires every due timer, and repeats.
// No polling, so a delayed message starts within timer resolution of its
// due time.
func (s *Server) loop() {
	defer close(s.loopDone)
	t := time.NewTimer(time.Hour)
	t.Stop()
	for {
		s.mu.Lock()
		now := time.Now()
		for len(s.timers) > 0 && !s.timers[0].at.After(now) {
			it := heap.Pop(&s.timers).(*timerItem)
			s.fire(it)
		}
		wait := time.Duration(-1)
		if len(s.timers) > 0 {
			wait = s.timers[0].at.Sub(now)
		}
		s.mu.Unlock()
		if wait >= 0 {
			t.Reset(wait)
		} else {
			t.Stop()
		}
		select {
		case <-t.C:
		case <-s.wake:
		case <-s.stop:
			t.Stop()
			return
		}
	}
}

func (s *Server) fire(it *timerItem) {
	switch it.kind {
	case timerMessage:
		if it.msg.timer == it {
			it.msg.timer = nil
		}
		s.ready(it.msg)
	case timerFlow:
		if it.flow.timer == it {
			it.flow.timer = nil
		}
		s.pumpFlow(it.flow)
	case timerSchedule:
		if it.sch.timer == it {
			it.sch.timer = nil
		}
		s.fireSchedule(it.sch)
	}
}

// monoAt converts a wall-clock instant of Config.Now into a monotonic
// deadline for the timer heap.
func (s *Server) monoAt(wall time.Time) time.Time {
	return time.Now().Add(wall.Sub(s.cfg.Now()))
}
