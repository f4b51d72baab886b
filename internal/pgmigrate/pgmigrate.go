// Package pgmigrate applies embedded SQL migrations to PostgreSQL, the one
// runner the store's and the outbox's migrations share: files named
// NNNN_name.sql, each applied once in its own transaction together with its
// row in a version table, concurrent callers (replicas starting at once)
// serialised by a session advisory lock.
package pgmigrate

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"sort"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Migration is one schema change.
type Migration struct {
	Version int
	Name    string
	SQL     string
}

// Set is one owner's migrations.
type Set struct {
	// Owner prefixes errors ("store", "outbox").
	Owner string
	// Files holds Dir/NNNN_name.sql.
	Files fs.FS
	Dir   string
	// Table records the applied versions; each owner has its own, so the
	// sets coexist in one database.
	Table string
	// LockKey is the pg_advisory_lock key; each owner has its own, so the
	// sets never wait for each other.
	LockKey int64
}

// ErrNeverMigrated: the version table does not exist.
var ErrNeverMigrated = errors.New("pgmigrate: never migrated")

// Load lists the migrations in version order; versions are unique and
// positive.
func (s Set) Load() ([]Migration, error) {
	entries, err := fs.ReadDir(s.Files, s.Dir)
	if err != nil {
		return nil, err
	}
	out := make([]Migration, 0, len(entries))
	for _, e := range entries {
		num, name, ok := strings.Cut(strings.TrimSuffix(e.Name(), ".sql"), "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || v <= 0 {
			return nil, fmt.Errorf("%s: migration file %q is not NNNN_name.sql", s.Owner, e.Name())
		}
		body, err := fs.ReadFile(s.Files, s.Dir+"/"+e.Name())
		if err != nil {
			return nil, err
		}
		out = append(out, Migration{Version: v, Name: name, SQL: string(body)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Version < out[j].Version })
	for i := 1; i < len(out); i++ {
		if out[i].Version == out[i-1].Version {
			return nil, fmt.Errorf("%s: two migrations have version %d", s.Owner, out[i].Version)
		}
	}
	return out, nil
}

// Apply applies the migrations the database has not seen. Running it again
// is a no-op; versions the database has and this binary does not (a newer
// release migrated first) are left alone, so a rollback can still start.
func (s Set) Apply(ctx context.Context, pool *pgxpool.Pool) error {
	migs, err := s.Load()
	if err != nil {
		return err
	}
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("%s: migrate: connect: %w", s.Owner, err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", s.LockKey); err != nil {
		return fmt.Errorf("%s: migrate: lock: %w", s.Owner, err)
	}
	defer func() {
		// A fresh context: the caller's may be done, and a lock left on a
		// pooled connection would block every later migration.
		if _, err := conn.Exec(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock($1)", s.LockKey); err != nil {
			conn.Conn().Close(context.WithoutCancel(ctx)) // ending the session releases the lock
		}
	}()
	if _, err := conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS `+s.Table+` (
		version    integer PRIMARY KEY,
		name       text NOT NULL,
		applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
		return fmt.Errorf("%s: migrate: create %s: %w", s.Owner, s.Table, err)
	}
	applied, err := s.applied(ctx, conn)
	if err != nil {
		return err
	}
	for _, m := range migs {
		if applied[m.Version] {
			continue
		}
		err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			// No arguments: pgx uses the simple protocol, so a file may hold
			// many statements and plpgsql bodies.
			if _, err := tx.Exec(ctx, m.SQL); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, "INSERT INTO "+s.Table+" (version, name) VALUES ($1, $2)", m.Version, m.Name)
			return err
		})
		if err != nil {
			return fmt.Errorf("%s: migration %04d_%s: %w", s.Owner, m.Version, m.Name, err)
		}
	}
	return nil
}

// Missing returns the first migration the database has not applied (ok
// false when none), or ErrNeverMigrated.
func (s Set) Missing(ctx context.Context, pool *pgxpool.Pool) (m Migration, ok bool, err error) {
	migs, err := s.Load()
	if err != nil {
		return Migration{}, false, err
	}
	applied, err := s.applied(ctx, pool)
	if err != nil {
		return Migration{}, false, err
	}
	for _, m := range migs {
		if !applied[m.Version] {
			return m, true, nil
		}
	}
	return Migration{}, false, nil
}

type queryer interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

func (s Set) applied(ctx context.Context, q queryer) (map[int]bool, error) {
	rows, err := q.Query(ctx, "SELECT version FROM "+s.Table)
	var versions []int32
	if err == nil {
		versions, err = pgx.CollectRows(rows, pgx.RowTo[int32])
	}
	if pgErr := (*pgconn.PgError)(nil); errors.As(err, &pgErr) && pgErr.Code == "42P01" { // undefined_table
		return nil, ErrNeverMigrated
	}
	if err != nil {
		return nil, fmt.Errorf("%s: read schema versions: %w", s.Owner, err)
	}
	applied := make(map[int]bool, len(versions))
	for _, v := range versions {
		applied[int(v)] = true
	}
	return applied, nil
}
