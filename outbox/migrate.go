package outbox

import (
	"context"
	"embed"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/digis/jobworker/internal/pgmigrate"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// MigrationsTable records which outbox migrations a database has applied.
// It is the outbox's own, so it coexists with any application's migration
// table (the apps' internal/store uses schema_migrations).
const MigrationsTable = "jobworker_outbox_migrations"

// migrations are the outbox's: its own version table, and its own
// advisory-lock key ("jwoutbox" in ASCII), so the outbox's and an
// application's migrations never wait for each other.
var migrations = pgmigrate.Set{
	Owner: "outbox", Files: migrationFiles, Dir: "migrations",
	Table: MigrationsTable, LockKey: 0x6a776f7574626f78,
}

// Migration is one embedded schema change of the outbox table.
type Migration = pgmigrate.Migration

// Migrations lists the embedded migrations in order, for teams that apply
// schema changes with their own tool instead of Migrate. Every file is
// idempotent (IF NOT EXISTS).
func Migrations() ([]Migration, error) { return migrations.Load() }

// Migrate creates or updates the outbox table (jobworker_outbox) in the
// pool's database. Each migration runs in its own transaction together
// with its row in MigrationsTable; a session advisory lock serialises
// concurrent callers (replicas starting at once), so the second waits and
// finds nothing to do. Running it again is a no-op, and versions this
// binary does not know (a newer release migrated first) are left alone.
// Call it from the same step that runs the application's migrations.
func Migrate(ctx context.Context, pool *pgxpool.Pool) error { return migrations.Apply(ctx, pool) }

// CheckSchema reports, wrapped in ErrSchemaBehind, the first embedded
// migration the database lacks; a readiness check can call it so an
// instance started before its release's migration stays unready.
func CheckSchema(ctx context.Context, pool *pgxpool.Pool) error {
	m, missing, err := migrations.Missing(ctx, pool)
	switch {
	case errors.Is(err, pgmigrate.ErrNeverMigrated):
		return fmt.Errorf("%w: the outbox was never migrated (call outbox.Migrate)", ErrSchemaBehind)
	case err != nil:
		return err
	case missing:
		return fmt.Errorf("%w: outbox migration %04d_%s is not applied (call outbox.Migrate)", ErrSchemaBehind, m.Version, m.Name)
	}
	return nil
}
