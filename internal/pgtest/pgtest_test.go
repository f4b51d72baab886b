package pgtest_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/digis/jobworker/internal/pgtest"
)

func TestDatabasesAreFreshAndDropped(t *testing.T) {
	t.Parallel()
	var name, url string
	t.Run("inner", func(t *testing.T) {
		db := pgtest.Create(t)
		name, url = db.Name, db.URL
		var tables int
		if err := db.Pool.QueryRow(t.Context(), `SELECT count(*) FROM pg_tables WHERE schemaname = 'public'`).Scan(&tables); err != nil {
			t.Fatal(err)
		}
		if tables != 0 {
			t.Fatalf("Create gave %d tables, want an empty database", tables)
		}
		pool := pgtest.New(t)
		if err := pool.QueryRow(t.Context(), `SELECT count(*) FROM pg_tables WHERE tablename IN ('streams', 'accounts', 'ledger_entries', 'tips', 'schema_migrations')`).Scan(&tables); err != nil {
			t.Fatal(err)
		}
		if tables != 5 {
			t.Fatalf("New gave %d of the 5 store tables", tables)
		}
	})
	// The inner test's cleanup dropped its databases.
	conn, err := pgx.Connect(context.Background(), url)
	if err == nil {
		_ = conn.Close(context.Background())
		t.Fatalf("database %s still exists after its test ended", name)
	}
}
