package outbox

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
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// MigrationsTable records which outbox migrations a database has applied.
// It is the outbox's own, so it coexists with any application's migration
// table (the apps' internal/store uses schema_migrations).
const MigrationsTable = "jobworker_outbox_migrations"

// migrateLockKey is the pg_advisory_lock key that serialises Migrate across
// processes: "jwoutbox" in ASCII, distinct from the store's key, so the two
// migrations never wait for each other.
const migrateLockKey int64 = 0x6a776f7574626f78

// Migration is one embedded schema change of the outbox table.
type Migration struct {
	Version int
	Name    string
	SQL     string
}

// Migrations lists the embedded migrations in order, for teams that apply
// schema changes with their own tool instead of Migrate. Every file is
// idempotent (IF NOT EXISTS).
func Migrations() ([]Migration, error) {
	entries, err := fs.ReadDir(migrationFiles, "migrations")
	if err != nil {
		return nil, err
	}
	out := make([]Migration, 0, len(entries))
	for _, e := range entries {
		num, name, ok := strings.Cut(strings.TrimSuffix(e.Name(), ".sql"), "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || v <= 0 {
			return nil, fmt.Errorf("outbox: migration file %q is not NNNN_name.sql", e.Name())
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
			return nil, fmt.Errorf("outbox: two migrations have version %d", out[i].Version)
		}
	}
	return out, nil
}

// Migrate creates or updates the outbox table (jobworker_outbox) in the
// pool's database. Each migration runs in its own transaction together
// with its row in MigrationsTable; a session advisory lock serialises
// concurrent callers (replicas starting at once), so the second waits and
// finds nothing to do. Running it again is a no-op, and versions this
// binary does not know (a newer release migrated first) are left alone.
// Call it from the same step that runs the application's migrations.
func Migrate(ctx context.Context, pool *pgxpool.Pool) error {
	migs, err := Migrations()
	if err != nil {
		return err
	}
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("outbox: migrate: connect: %w", err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", migrateLockKey); err != nil {
		return fmt.Errorf("outbox: migrate: lock: %w", err)
	}
	defer func() {
		// A fresh context: the caller's may be done, and a lock left on a
		// pooled connection would block every later migration.
		if _, err := conn.Exec(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock($1)", migrateLockKey); err != nil {
			conn.Conn().Close(context.WithoutCancel(ctx)) // ending the session releases the lock
		}
	}()
	if _, err := conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS `+MigrationsTable+` (
		version    integer PRIMARY KEY,
		name       text NOT NULL,
		applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
		return fmt.Errorf("outbox: migrate: create %s: %w", MigrationsTable, err)
	}
	applied, err := appliedVersions(ctx, conn)
	if err != nil {
		return err
	}
	for _, m := range migs {
		if applied[m.Version] {
			continue
		}
		err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			// No arguments: the simple protocol, so a file may hold several
			// statements.
			if _, err := tx.Exec(ctx, m.SQL); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, "INSERT INTO "+MigrationsTable+" (version, name) VALUES ($1, $2)", m.Version, m.Name)
			return err
		})
		if err != nil {
			return fmt.Errorf("outbox: migration %04d_%s: %w", m.Version, m.Name, err)
		}
	}
	return nil
}

type queryer interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

func appliedVersions(ctx context.Context, q queryer) (map[int]bool, error) {
	rows, err := q.Query(ctx, "SELECT version FROM "+MigrationsTable)
	var versions []int32
	if err == nil {
		versions, err = pgx.CollectRows(rows, pgx.RowTo[int32])
	}
	if err != nil {
		return nil, fmt.Errorf("outbox: read schema versions: %w", err)
	}
	applied := make(map[int]bool, len(versions))
	for _, v := range versions {
		applied[int(v)] = true
	}
	return applied, nil
}

// CheckSchema reports, wrapped in ErrSchemaBehind, the first embedded
// migration the database lacks; a readiness check can call it so an
// instance started before its release's migration stays unready.
func CheckSchema(ctx context.Context, pool *pgxpool.Pool) error {
	migs, err := Migrations()
	if err != nil {
		return err
	}
	applied, err := appliedVersions(ctx, pool)
	if pgErr := (*pgconn.PgError)(nil); errors.As(err, &pgErr) && pgErr.Code == "42P01" { // undefined_table
		return fmt.Errorf("%w: the outbox was never migrated (call outbox.Migrate)", ErrSchemaBehind)
	}
	if err != nil {
		return err
	}
	for _, m := range migs {
		if !applied[m.Version] {
			return fmt.Errorf("%w: outbox migration %04d_%s is not applied (call outbox.Migrate)", ErrSchemaBehind, m.Version, m.Name)
		}
	}
	return nil
}
