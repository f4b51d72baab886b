package store

import (
	"context"
	"embed"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/digis/jobworker/internal/pgmigrate"
	"github.com/digis/jobworker/outbox"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// migrations are the store's: its own version table (schema_migrations)
// and advisory-lock key ("jobworker" in ASCII, recognisable in pg_locks).
var migrations = pgmigrate.Set{
	Owner: "store", Files: migrationFiles, Dir: "migrations",
	Table: "schema_migrations", LockKey: 0x6a6f62776f726b65,
}

// Migration is one embedded schema change.
type Migration = pgmigrate.Migration

// Migrations lists the embedded migrations in order. File names are
// NNNN_name.sql; versions are unique and increasing.
func Migrations() ([]Migration, error) { return migrations.Load() }

// Migrate applies the embedded migrations that the database has not seen,
// each in its own transaction together with its schema_migrations row, then
// the outbox's (outbox.Migrate: the table the follow-up jobs are written to,
// with its own version table). A session advisory lock serialises
// concurrent callers (several replicas starting at once): the second waits,
// then finds nothing to do. Running it again is a no-op. A database that has
// versions this binary does not know (a newer release ran first) is left
// alone, so a rollback can still start.
func Migrate(ctx context.Context, pool *pgxpool.Pool) error {
	if err := migrations.Apply(ctx, pool); err != nil {
		return err
	}
	return outbox.Migrate(ctx, pool)
}

// CheckSchema reports, wrapped in ErrSchemaBehind, the first embedded
// migration the database has not applied, the outbox's included. Versions
// the database has and this binary does not (a newer release migrated
// first) are fine.
func CheckSchema(ctx context.Context, pool *pgxpool.Pool) error {
	m, missing, err := migrations.Missing(ctx, pool)
	switch {
	case errors.Is(err, pgmigrate.ErrNeverMigrated):
		return fmt.Errorf("%w: it was never migrated (run `api -migrate` or set DATABASE_MIGRATE=true)", ErrSchemaBehind)
	case err != nil:
		return err
	case missing:
		return fmt.Errorf("%w: migration %04d_%s is not applied (run `api -migrate` or set DATABASE_MIGRATE=true)", ErrSchemaBehind, m.Version, m.Name)
	}
	err = outbox.CheckSchema(ctx, pool)
	if errors.Is(err, outbox.ErrSchemaBehind) {
		return fmt.Errorf("%w: %w (run `api -migrate` or set DATABASE_MIGRATE=true)", ErrSchemaBehind, err)
	}
	return err
}
