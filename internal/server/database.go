package server

import (
	"cmp"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"strings"
	"time"

	"github.com/arxsec/arx/internal/store"
	"github.com/arxsec/arx/internal/store/postgres"
	"github.com/arxsec/arx/internal/store/sqlite"
)

// DatabaseConfig picks the store. The default is SQLite in the data
// directory; a postgres:// URL makes this server one of possibly several
// replicas sharing that database.
type DatabaseConfig struct {
	// URL is "" (SQLite, DATA/arx.db) or postgres://user:pass@host:port/db?...
	URL string
	// Pool settings for PostgreSQL; zero means the default.
	MaxConns        int32
	MinConns        int32
	MaxConnLifetime time.Duration
	MaxConnIdleTime time.Duration
	// Time limits; zero means the store's default. BusyTimeout (SQLite) is
	// how long a write waits for a lock another process holds on the
	// database file; ReadTimeout and WriteTimeout (PostgreSQL) bound one
	// read and one batch of writes, so a replica cut off from its database
	// refuses within them.
	BusyTimeout  time.Duration
	ReadTimeout  time.Duration
	WriteTimeout time.Duration
	// LogFault (SQLite), when set, is called before each write of the
	// log; an error fails it as the disk would. For tests only.
	LogFault func() error
}

// Shared keys: replicas sign one log and one kind of credential, so they
// must hold the same keys. The database remembers the public halves the
// first replica had, and a replica with other keys refuses to start.
const (
	metaLogKey        = "replicas.log_key"
	metaCredentialKey = "replicas.credential_key"
)

// openStore opens the configured store and checks that this server's keys
// are the ones the database was first started with (on a shared database,
// every replica's; on SQLite, keys from another --key-dir would sign a
// second log).
func openStore(ctx context.Context, cfg Config, logKey string, cred ed25519.PrivateKey) (store.Store, error) {
	db := cfg.Database
	var st store.Store
	var err error
	if db.URL == "" {
		st, err = sqlite.Open(ctx, sqlite.Config{Path: filepath.Join(cfg.DataDir, DatabaseFile), BusyTimeout: db.BusyTimeout,
			LogFault: db.LogFault, Logger: cfg.Logger})
	} else {
		u, perr := url.Parse(db.URL)
		if perr != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
			return nil, errors.New("database: not a postgres:// URL (leave --database empty for SQLite in the data directory)")
		}
		st, err = postgres.Open(ctx, postgres.Config{URL: db.URL, MaxConns: db.MaxConns, MinConns: db.MinConns,
			MaxConnLifetime: db.MaxConnLifetime, MaxConnIdleTime: db.MaxConnIdleTime,
			ReadTimeout: db.ReadTimeout, BatchTimeout: db.WriteTimeout, Logger: cfg.Logger})
	}
	if err != nil {
		return nil, err
	}
	from := "the first replica's data directory"
	if cfg.KeyDir != "" {
		from = "the deployment's key directory (arx keys init)"
	}
	pub := base64.StdEncoding.EncodeToString(cred.Public().(ed25519.PublicKey))
	for _, k := range []struct{ meta, mine, file string }{
		{metaLogKey, logKey, LogKeyFile + " and " + LogPubFile},
		{metaCredentialKey, pub, CredentialKeyFile},
	} {
		if err := sameKey(ctx, st, k.meta, k.mine); err != nil {
			st.Close()
			return nil, fmt.Errorf("%s in %s: %w; copy %s, %s and %s from %s",
				k.file, cmp.Or(cfg.KeyDir, cfg.DataDir), err, LogKeyFile, LogPubFile, CredentialKeyFile, from)
		}
	}
	return st, nil
}

// sameKey records mine as the deployment's key when none is recorded, and
// otherwise checks that it is the one.
func sameKey(ctx context.Context, st store.Store, key, mine string) error {
	have, err := st.Meta(ctx, key)
	if errors.Is(err, store.ErrNotFound) {
		if err := st.Update(ctx, func(tx store.Tx) error { return tx.SetMeta(key, mine) }); err != nil {
			return err
		}
		have, err = st.Meta(ctx, key) // two first replicas at once: one of them wins
	}
	if err != nil {
		return err
	}
	if have != mine {
		return fmt.Errorf("not the key this deployment's database was started with (%s)", strings.TrimSpace(short(have)))
	}
	return nil
}

func short(s string) string {
	if len(s) > 48 {
		return s[:48] + "..."
	}
	return s
}
