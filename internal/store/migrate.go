package store

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"sort"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/digis/jobworker/outbox"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// migrateLockKey is the pg_advisory_lock key that serialises Migrate across
// processes ("jobworker" in ASCII, so it is recognisable in pg_locks).
const migrateLockKey int64 = 0x6a6f62776f726b65

// Migration is one embedded schema change.
type Migration struct {
	Version int
	Name    string
	SQL     string
}

// Migrations lists the embedded migrations in order. File names are
// NNNN_name.sql; versions are unique and increasing.
func Migrations() ([]Migration, error) {
	entries, err := fs.ReadDir(migrationFiles, "migrations")
	if err != nil {
		return nil, err
	}
	var out []Migration
	for _, e := range entries {
		num, name, ok := strings.Cut(strings.TrimSuffix(e.Name(), ".sql"), "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || v <= 0 {
			return nil, fmt.Errorf("store: migration file %q is not NNNN_name.sql", e.Name())
		}
		body, err := migrationFiles.ReadFile("migrations/" + e.Name())
		if err != nil {
			return nil, err
		}
		out = append(out, Migration{Version: v, Name: name, SQL: string(body)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Version < out[j].Version })
	for i := 1; i < len(out); i++ {
		if out[i].Version == out[i-1].Version {
			return nil, fmt.Errorf("store: two migrations have version %d", out[i].Version)
		}
	}
	return out, nil
}

// Migrate applies the embedded migrations that the database has not seen,
// each in its own transaction together with its schema_migrations row, then
// the outbox's (outbox.Migrate: the table the follow-up jobs are written to,
// with its own version table). A session advisory lock serialises
// concurrent callers (several replicas starting at once): the second waits,
// then finds nothing to do. Running it again is a no-op. A database that has
// versions this binary does not know (a newer release ran first) is left
// alone, so a rollback can still start.
func Migrate(ctx context.Context, pool *pgxpool.Pool) error {
	if err := migrate(ctx, pool); err != nil {
		return err
	}
	return outbox.Migrate(ctx, pool)
}

func migrate(ctx context.Context, pool *pgxpool.Pool) error {
	migs, err := Migrations()
	if err != nil {
		return err
	}
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("store: migrate: connect: %w", err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", migrateLockKey); err != nil {
		return fmt.Errorf("store: migrate: lock: %w", err)
	}
	defer func() {
		// A fresh context: the caller's may be done, and a lock left on a
		// pooled connection would block the next migration forever.
		_, uerr := conn.Exec(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock($1)", migrateLockKey)
		if uerr != nil {
			conn.Conn().Close(context.WithoutCancel(ctx)) // dropping the session releases the lock
		}
	}()
	if _, err := conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version    integer PRIMARY KEY,
		name       text NOT NULL,
		applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
		return fmt.Errorf("store: migrate: create schema_migrations: %w", err)
	}
	applied := map[int]bool{}
	rows, err := conn.Query(ctx, "SELECT version FROM schema_migrations")
	if err != nil {
		return fmt.Errorf("store: migrate: read versions: %w", err)
	}
	versions, err := pgx.CollectRows(rows, pgx.RowTo[int32])
	if err != nil {
		return fmt.Errorf("store: migrate: read versions: %w", err)
	}
	for _, v := range versions {
		applied[int(v)] = true
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
			_, err := tx.Exec(ctx, "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", m.Version, m.Name)
			return err
		})
		if err != nil {
			return fmt.Errorf("store: migration %04d_%s: %w", m.Version, m.Name, err)
		}
	}
	return nil
}

// CheckSchema reports, wrapped in ErrSchemaBehind, the first embedded
// migration the database has not applied, the outbox's included. Versions
// the database has and this binary does not (a newer release migrated
// first) are fine.
func CheckSchema(ctx context.Context, pool *pgxpool.Pool) error {
	if err := checkSchema(ctx, pool); err != nil {
		return err
	}
	err := outbox.CheckSchema(ctx, pool)
	if errors.Is(err, outbox.ErrSchemaBehind) {
		return fmt.Errorf("%w: %w (run `api -migrate` or set DATABASE_MIGRATE=true)", ErrSchemaBehind, err)
	}
	return err
}

func checkSchema(ctx context.Context, pool *pgxpool.Pool) error {
	migs, err := Migrations()
	if err != nil {
		return err
	}
	rows, err := pool.Query(ctx, "SELECT version FROM schema_migrations")
	var versions []int32
	if err == nil {
		versions, err = pgx.CollectRows(rows, pgx.RowTo[int32])
	}
	if pgErr := (*pgconn.PgError)(nil); errors.As(err, &pgErr) && pgErr.Code == "42P01" { // undefined_table
		return fmt.Errorf("%w: it was never migrated (run `api -migrate` or set DATABASE_MIGRATE=true)", ErrSchemaBehind)
	}
	if err != nil {
		return fmt.Errorf("store: read schema versions: %w", err)
	}
	applied := make(map[int]bool, len(versions))
	for _, v := range versions {
		applied[int(v)] = true
	}
	for _, m := range migs {
		if !applied[m.Version] {
			return fmt.Errorf("%w: migration %04d_%s is not applied (run `api -migrate` or set DATABASE_MIGRATE=true)", ErrSchemaBehind, m.Version, m.Name)
		}
	}
	return nil
}
