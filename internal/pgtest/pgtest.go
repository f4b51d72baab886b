// Package pgtest gives each test its own PostgreSQL database.
//
//	pool := pgtest.New(t) // a fresh, migrated database, dropped at cleanup
//	db := pgtest.Create(t) // a fresh, empty database (no migrations): db.URL, db.Pool
//
// The server is found at PGTEST_ADMIN_URL when set, else at
// postgres://postgres@127.0.0.1:5432/postgres, else through the unix socket
// in /var/run/postgresql. The admin connection must be allowed to CREATE
// DATABASE. Each test gets a database named jobworker_test_<random>, so tests
// run in parallel without sharing rows, and it is dropped WITH (FORCE) when
// the test ends.
//
// When no server answers, tests are skipped with a message saying how to get
// one, unless the environment says CI=true: there a missing server is a
// failure, so CI never passes by skipping the tests that matter.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/digis/jobworker/internal/store"
)

// Candidates tried, in order, when PGTEST_ADMIN_URL is unset.
var defaultAdminURLs = []string{
	"postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable",
	"host=/var/run/postgresql user=postgres dbname=postgres",
	"host=/var/run/postgresql dbname=postgres",
}

const connectTimeout = 5 * time.Second

var (
	findOnce  sync.Once
	adminURL  string
	adminCfg  *pgx.ConnConfig
	findError error
)

// admin finds a reachable server once per test binary, so a missing server
// costs one timeout, not one per test.
func admin(tb testing.TB) *pgx.ConnConfig {
	tb.Helper()
	findOnce.Do(func() {
		urls := defaultAdminURLs
		if u := os.Getenv("PGTEST_ADMIN_URL"); u != "" {
			urls = []string{u}
		}
		var errs []string
		for _, u := range urls {
			cfg, err := pgx.ParseConfig(u)
			if err != nil {
				errs = append(errs, fmt.Sprintf("unparsable admin URL #%d", len(errs)+1))
				continue
			}
			cfg.ConnectTimeout = connectTimeout
			ctx, cancel := context.WithTimeout(context.Background(), connectTimeout)
			conn, err := pgx.ConnectConfig(ctx, cfg)
			cancel()
			if err != nil {
				errs = append(errs, fmt.Sprintf("%s@%s: %v", cfg.User, cfg.Host, err))
				continue
			}
			_ = conn.Close(context.Background())
			adminURL, adminCfg = u, cfg
			return
		}
		findError = fmt.Errorf("no PostgreSQL server reachable (%v)", errs)
	})
	if adminCfg == nil {
		msg := fmt.Sprintf("pgtest: %v; start one (apt-get install postgresql) or set PGTEST_ADMIN_URL", findError)
		if os.Getenv("CI") == "true" {
			tb.Fatal(msg)
		}
		tb.Skip(msg)
	}
	return adminCfg.Copy()
}

// databaseURL is the admin connection string pointed at another database,
// keeping every other setting (TLS, password, host) as given.
func databaseURL(admin, name string) (string, error) {
	if strings.HasPrefix(admin, "postgres://") || strings.HasPrefix(admin, "postgresql://") {
		u, err := url.Parse(admin)
		if err != nil {
			return "", err
		}
		u.Path = "/" + name
		return u.String(), nil
	}
	// Keyword/value DSN: a later keyword overrides an earlier one.
	return admin + " dbname=" + name, nil
}

// Database is one private test database.
type Database struct {
	Name string
	// URL connects to the database (a DSN or URL, as pgx accepts).
	URL  string
	Pool *pgxpool.Pool
}

// Create makes an empty database for the test and drops it at cleanup.
func Create(tb testing.TB) *Database {
	tb.Helper()
	cfg := admin(tb)
	var rnd [8]byte
	_, _ = rand.Read(rnd[:])
	name := "jobworker_test_" + hex.EncodeToString(rnd[:])

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		tb.Fatalf("pgtest: connect: %v", err)
	}
	// Identifiers cannot be bound parameters; name is hex we made.
	_, err = conn.Exec(ctx, "CREATE DATABASE "+name)
	_ = conn.Close(ctx)
	if err != nil {
		tb.Fatalf("pgtest: create database: %v", err)
	}
	tb.Cleanup(func() { drop(tb, cfg, name) })

	dbURL, err := databaseURL(adminURL, name)
	if err != nil {
		tb.Fatalf("pgtest: database URL: %v", err)
	}
	poolCfg, err := pgxpool.ParseConfig(dbURL)
	if err != nil {
		tb.Fatalf("pgtest: pool config: %v", err)
	}
	poolCfg.MaxConns = 8
	pool, err := pgxpool.NewWithConfig(ctx, poolCfg)
	if err != nil {
		tb.Fatalf("pgtest: pool: %v", err)
	}
	tb.Cleanup(pool.Close) // runs before drop (cleanups are LIFO)
	return &Database{Name: name, URL: dbURL, Pool: pool}
}

// New makes a database with the store's migrations applied and returns its
// pool.
func New(tb testing.TB) *pgxpool.Pool {
	tb.Helper()
	db := Create(tb)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := store.Migrate(ctx, db.Pool); err != nil {
		tb.Fatalf("pgtest: migrate: %v", err)
	}
	return db.Pool
}

// drop removes a test's database. DROP DATABASE waits for a checkpoint,
// which takes long on a machine whose disk other suites keep busy; a
// database it could not drop is reported, not failed: the test's own
// verdict is already in, and a leftover jobworker_test_* database harms
// nothing but disk space.
func drop(tb testing.TB, cfg *pgx.ConnConfig, name string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		tb.Logf("pgtest: connect to drop %s (left behind): %v", name, err)
		return
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
		tb.Logf("pgtest: drop %s (left behind): %v", name, err)
	}
}
