package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// Options tune either implementation.
type Options struct {
	// MaxTipAmount caps one tip, in tokens (TIP_MAX_AMOUNT). Defaults to
	// DefaultMaxTipAmount.
	MaxTipAmount int64
	// Logger receives a line per decision worth one (tip or deposit
	// replayed, key reused, refund applied, recorded or short). Lines carry
	// user ids, row ids and token counts only. Defaults to discarding (Open's in-memory warning then goes
	// to slog.Default, so it is never silent).
	Logger *slog.Logger
	// Now is the clock of the Memory store (tip timestamps and the 30-day
	// window). Postgres uses the database clock. Defaults to time.Now.
	Now func() time.Time
}

// Validate reports a bad option.
func (o Options) Validate() error {
	if o.MaxTipAmount < 0 || o.MaxTipAmount > MaxCreditAmount {
		return invalid("MaxTipAmount must be between 1 and %d (0 for the default)", MaxCreditAmount)
	}
	return nil
}

func (o Options) withDefaults() Options {
	if o.MaxTipAmount == 0 {
		o.MaxTipAmount = DefaultMaxTipAmount
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

// Config is what a binary needs to open its store.
type Config struct {
	// DatabaseURL is a PostgreSQL URL or DSN (DATABASE_URL). Empty selects
	// the in-memory store, which is for the one-command local stack only:
	// its data dies with the process and it is not shared between replicas.
	// Open logs a warning saying so.
	DatabaseURL string
	// Migrate applies the embedded migrations before returning (a start-up
	// flag; concurrent starts are safe). Defaults to false: run
	// `api -migrate` (or Migrate) as a release step instead.
	Migrate bool
	Options
}

// Open connects to cfg.DatabaseURL, or builds a Memory store when it is
// empty. The returned function releases the connection pool.
func Open(ctx context.Context, cfg Config) (Store, func(), error) {
	if err := cfg.Options.Validate(); err != nil {
		return nil, nil, err
	}
	opts := cfg.Options.withDefaults()
	if strings.TrimSpace(cfg.DatabaseURL) == "" {
		warn := cfg.Logger
		if warn == nil {
			warn = slog.Default()
		}
		warn.Warn("no database (DATABASE_URL=memory): using the IN-MEMORY store; data is lost on exit and not shared between processes (local development only)")
		m, err := NewMemory(opts)
		return m, func() {}, err
	}
	pool, err := pgxpool.New(ctx, cfg.DatabaseURL)
	if err != nil {
		// pgx's parse errors may quote the URL, password included.
		return nil, nil, fmt.Errorf("store: DATABASE_URL is not a valid PostgreSQL URL or DSN")
	}
	if cfg.Migrate {
		if err := Migrate(ctx, pool); err != nil {
			pool.Close()
			return nil, nil, err
		}
	} else {
		// Not fatal: the release's migration step may still be running, and
		// readiness (Ping) stays failed until it has. Bounded, so an
		// unreachable database does not hold start-up here.
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		if err := CheckSchema(cctx, pool); errors.Is(err, ErrSchemaBehind) {
			opts.Logger.Warn("database schema is behind this release; not ready until it is migrated", "error", err.Error())
		}
		cancel()
	}
	p, err := NewPostgres(pool, opts)
	if err != nil {
		pool.Close()
		return nil, nil, err
	}
	return p, pool.Close, nil
}

// ParseMaxTipAmount parses TIP_MAX_AMOUNT: empty means the default, else a
// positive integer number of tokens.
func ParseMaxTipAmount(s string) (int64, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return DefaultMaxTipAmount, nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 || n > MaxCreditAmount {
		return 0, invalid("%q is not a whole number of tokens between 1 and %d", s, MaxCreditAmount)
	}
	return n, nil
}
