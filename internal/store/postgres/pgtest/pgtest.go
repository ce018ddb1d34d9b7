// Package pgtest gives tests a fresh PostgreSQL database of their own on
// the server named by ARX_TEST_POSTGRES (a role that may create databases;
// .ci/setup-postgres.sh starts one). Without it tests skip, unless
// ARX_TEST_REQUIRE_SERVERS=1 (CI), when they fail.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Env names the variable with the server's connection string.
const Env = "ARX_TEST_POSTGRES"

// URL returns the server's connection string, or skips (fails in CI).
func URL(t testing.TB) string {
	t.Helper()
	u := os.Getenv(Env)
	if u == "" {
		if os.Getenv("ARX_TEST_REQUIRE_SERVERS") == "1" {
			t.Fatalf("%s is not set, and ARX_TEST_REQUIRE_SERVERS=1: start PostgreSQL with `. .ci/setup-postgres.sh`", Env)
		}
		t.Skipf("needs PostgreSQL: set %s=postgres://... (a role with CREATEDB), e.g. with `. .ci/setup-postgres.sh`", Env)
	}
	return u
}

// Database creates an empty database, drops it when the test ends, and
// returns its connection string.
func Database(t testing.TB) string {
	t.Helper()
	base := URL(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		t.Fatalf("pgtest: connect to %s: %v", Env, err)
	}
	defer conn.Close(context.Background())
	var b [6]byte
	rand.Read(b[:])
	name := "arx_test_" + hex.EncodeToString(b[:])
	if _, err := conn.Exec(ctx, `CREATE DATABASE `+name); err != nil {
		t.Fatalf("pgtest: create database: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, base)
		if err != nil {
			t.Errorf("pgtest: connect to drop %s: %v", name, err)
			return
		}
		defer conn.Close(context.Background())
		// FORCE ends the test's own sessions; it may not end an
		// autovacuum worker (the superuser's) that a busy test started:
		// that one finishes soon, so try again a while.
		for {
			_, err := conn.Exec(ctx, `DROP DATABASE IF EXISTS `+name+` WITH (FORCE)`)
			if err == nil {
				return
			}
			if ctx.Err() != nil || !strings.Contains(err.Error(), "42501") {
				t.Errorf("pgtest: drop database %s: %v", name, err)
				return
			}
			time.Sleep(200 * time.Millisecond)
		}
	})
	u, err := url.Parse(base)
	if err != nil {
		t.Fatalf("pgtest: %s is not a URL: %v", Env, err)
	}
	u.Path = "/" + name
	return u.String()
}
