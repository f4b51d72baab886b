package outbox

import (
	"context"
	"fmt"
	"testing/fstest"

	"github.com/jackc/pgx/v5/pgxpool"
)

// MigrateUpTo applies the embedded migrations up to version only, as a
// release that did not have the later ones did.
func MigrateUpTo(ctx context.Context, pool *pgxpool.Pool, version int) error {
	migs, err := migrations.Load()
	if err != nil {
		return err
	}
	old := migrations
	files := fstest.MapFS{}
	for _, m := range migs {
		if m.Version <= version {
			files[fmt.Sprintf("m/%04d_%s.sql", m.Version, m.Name)] = &fstest.MapFile{Data: []byte(m.SQL)}
		}
	}
	old.Files, old.Dir = files, "m"
	return old.Apply(ctx, pool)
}

// SetSyncRounds makes relay rounds commit synchronously (true) or not (the
// default), for the benchmark. Not safe while a relay runs.
func SetSyncRounds(on bool) { syncRounds = on }

// SetBitmapRounds lets the relay's claim use a bitmap scan (true) or not
// (the default), for the benchmark. Not safe while a relay runs.
func SetBitmapRounds(on bool) { bitmapRounds = on }
