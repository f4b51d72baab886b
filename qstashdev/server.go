package qstashdev

import (
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
// its Handler (or call Serve), and stop it with Shutdown or Close. All
// methods are safe for concurrent use.
type Server struct {
	cfg    Config
	log    *slog.Logger
	client *http.Client

	// Locking: one mutex, mu, guards all mutable state: the fields from mu
	// to onEvent, the values the maps and stores hold (every field of
	// queue, flowKey, topic, schedule, dedupEntry and dlqEntry, and the
	// message fields below its blank line), the timer heap and the closed
	// flag. cfg, log and client never change after New; message fields
	// above the blank line are fixed at creation and read without the lock.
	//
	//   - Functions documented "the caller holds s.mu" (the message life
	//     cycle in state.go, the queue and flow-control gates, the
	//     scheduler's fire, event, deadLetter, ...) never lock; everything
	//     else takes mu itself, for as short a span as it can.
	//   - No I/O under mu: handlers read their request before locking,
	//     build their answer under the lock, unlock, then write it.
	//     Deliveries run in their own goroutines on a snapshot (attempt)
	//     and lock only to record the outcome (finishAttempt).
	//   - The scheduler goroutine (loop) fires due timers with mu held, so
	//     a timer's work (start an attempt, reopen a rate window, trigger a
	//     schedule) is atomic with respect to the API.
	mu         sync.Mutex
	curKey     string
	nextKey    string
	seq        uint64
	messages   map[string]*message // pending messages, by id
	pending    int
	dedup      map[string]*dedupEntry
	dedupOrder []*dedupEntry
	queues     map[string]*queue
	flows      map[string]*flowKey
	topics     map[string]*topic
	schedules  map[string]*schedule
	runs       map[string]*workflowRun
	runOrder   []string // run ids, oldest first, for the bound
	dlq        dlqStore
	events     eventLog
	timers     timerHeap
	// idleWaiters are closed when pending drops to 0 (WaitIdle).
	idleWaiters []chan struct{}
	closed      bool
	httpSrv     *http.Server
	jr          *journal // nil without Config.DataDir
	// onEvent, when set (by tests, through export_test.go), is called with
	// s.mu held for every event-log record: tests wait on it instead of
	// sleeping.
	onEvent func(state, messageID string)

	wake     chan struct{} // an earlier timer was added
	stop     chan struct{} // closed by Shutdown/Close: the loop exits
	loopDone chan struct{}
	stopOnce sync.Once

	// deliveries counts running delivery attempts so shutdown can wait.
	deliveries sync.WaitGroup
	// idleRunners hands an attempt to a delivery goroutine waiting for
	// work (spawn); unbuffered, so a send succeeds only when one waits.
	idleRunners chan func()
	// baseCtx is the parent of every delivery; cancelled by Close.
	baseCtx    context.Context
	cancelBase context.CancelFunc
}

// New validates cfg, applies defaults and starts the scheduler. The returned
// Server does not listen anywhere until Serve is called; its Handler can be
// mounted on any http.Server or httptest.Server.
func New(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("qstashdev: invalid config: %w", err)
	}
	cfg = cfg.withDefaults()
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{
		cfg:         cfg,
		log:         cfg.Logger,
		client:      cfg.HTTPClient,
		curKey:      cfg.CurrentSigningKey,
		nextKey:     cfg.NextSigningKey,
		messages:    map[string]*message{},
		dedup:       map[string]*dedupEntry{},
		queues:      map[string]*queue{},
		flows:       map[string]*flowKey{},
		topics:      map[string]*topic{},
		schedules:   map[string]*schedule{},
		runs:        map[string]*workflowRun{},
		dlq:         newDLQStore(cfg.MaxDLQMessages),
		events:      eventLog{max: cfg.MaxEvents},
		wake:        make(chan struct{}, 1),
		idleRunners: make(chan func()),
		stop:        make(chan struct{}),
		loopDone:    make(chan struct{}),
		baseCtx:     ctx,
		cancelBase:  cancel,
	}
	if cfg.DataDir != "" {
		if err := s.openJournal(cfg.DataDir); err != nil {
			cancel()
			return nil, fmt.Errorf("qstashdev: %w", err)
		}
	}
	go s.loop()
	return s, nil
}

// Handler returns the HTTP handler serving the QStash API.
// Cross-site requests and foreign Host names are refused (see guard).
func (s *Server) Handler() http.Handler { return s.guard(http.HandlerFunc(s.serveHTTP)) }

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

// Shutdown stops accepting API requests and starting deliveries, stops the
// scheduler, and waits for in-flight deliveries to finish until ctx is done;
// then it cancels those still running. Pending messages are dropped unless
// Config.DataDir keeps them for the next start.
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
	s.closeJournal()
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
	s.closeJournal()
	return err
}

// debug reports whether debug records are logged: the per-message ones are
// built only then, since their arguments allocate even when dropped.
func (s *Server) debug() bool { return s.log.Enabled(context.Background(), slog.LevelDebug) }
