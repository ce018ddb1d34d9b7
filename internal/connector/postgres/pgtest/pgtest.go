// Package pgtest gives tests (and the benchmark) a real PostgreSQL: the
// server named by ARX_TEST_POSTGRES (as .ci/setup-postgres.sh exports it)
// when its role may create roles, otherwise a throwaway cluster started from
// Debian's packages (/usr/lib/postgresql/*/bin) on a free loopback port.
// Without either, tests skip with a message naming what is missing, or fail
// when ARX_TEST_REQUIRE_SERVERS=1 (CI).
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Cluster is a running PostgreSQL server and a superuser (or CREATEROLE)
// URL for it.
type Cluster struct {
	URL  string
	dir  string
	proc *exec.Cmd
}

var (
	shared     *Cluster
	sharedErr  error
	sharedOnce sync.Once
	underMain  bool
)

// Main runs a package's tests and stops the cluster they shared. Use it as
// TestMain: func TestMain(m *testing.M) { pgtest.Main(m) }.
func Main(m *testing.M) {
	underMain = true
	code := m.Run()
	if shared != nil {
		shared.Stop()
	}
	os.Exit(code)
}

// DB is one test's database, owned by an administrator role of its own
// that may create roles (what a postgres connector's upstream user is).
type DB struct {
	Name          string
	Admin         string // the role
	AdminPassword string
	// AdminURL is the connector's upstream: postgres://ADMIN@HOST:PORT/DB,
	// without the password.
	AdminURL string
	// SuperURL reaches the same database as the cluster's superuser.
	SuperURL string
}

// New returns a fresh database for t, dropped when t ends.
func New(t testing.TB) *DB {
	t.Helper()
	c := cluster(t)
	db, err := c.NewDB(context.Background())
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	t.Cleanup(func() { c.DropDB(context.Background(), db) })
	return db
}

func cluster(t testing.TB) *Cluster {
	t.Helper()
	if !underMain {
		c, err := Find()
		if err != nil {
			skipOrFail(t, err)
		}
		if c.proc != nil {
			t.Cleanup(c.Stop)
		}
		return c
	}
	sharedOnce.Do(func() { shared, sharedErr = Find() })
	if sharedErr != nil {
		skipOrFail(t, sharedErr)
	}
	return shared
}

func skipOrFail(t testing.TB, err error) {
	t.Helper()
	if os.Getenv("ARX_TEST_REQUIRE_SERVERS") == "1" {
		t.Fatalf("pgtest: PostgreSQL is required (ARX_TEST_REQUIRE_SERVERS=1): %v", err)
	}
	t.Skipf("pgtest: no PostgreSQL: %v (set ARX_TEST_POSTGRES, e.g. by sourcing .ci/setup-postgres.sh, or install Debian's postgresql)", err)
}

// Find returns the server of ARX_TEST_POSTGRES when its role may create
// roles, or starts a cluster of its own.
func Find() (*Cluster, error) {
	var why error
	if u := os.Getenv("ARX_TEST_POSTGRES"); u != "" {
		ok, err := canCreateRoles(u)
		if ok {
			return &Cluster{URL: u}, nil
		}
		why = fmt.Errorf("the role of ARX_TEST_POSTGRES cannot create roles (%v)", err)
	}
	c, err := Start(Options{})
	if err != nil {
		return nil, errors.Join(why, err)
	}
	return c, nil
}

func canCreateRoles(u string) (bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, u)
	if err != nil {
		return false, err
	}
	defer conn.Close(ctx)
	var ok bool
	err = conn.QueryRow(ctx, `SELECT rolsuper OR rolcreaterole FROM pg_roles WHERE rolname = current_user`).Scan(&ok)
	return ok, err
}

// Options tune a cluster of its own.
type Options struct {
	// Durable keeps fsync on (the benchmark); tests turn it off.
	Durable bool
}

// Start starts a throwaway cluster from /usr/lib/postgresql/*/bin on a
// free loopback port, with password (SCRAM) authentication over TCP.
func Start(o Options) (*Cluster, error) {
	bins, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if len(bins) == 0 {
		return nil, errors.New("no /usr/lib/postgresql/*/bin/initdb")
	}
	sort.Strings(bins)
	bin := filepath.Dir(bins[len(bins)-1])
	dir, err := os.MkdirTemp("", "arx-pgtest-")
	if err != nil {
		return nil, err
	}
	var cred *syscall.Credential
	if os.Geteuid() == 0 { // initdb refuses root: run as the postgres user
		pu, err := user.Lookup("postgres")
		if err != nil {
			os.RemoveAll(dir)
			return nil, fmt.Errorf("running as root and no postgres user: %w", err)
		}
		uid, _ := strconv.Atoi(pu.Uid)
		gid, _ := strconv.Atoi(pu.Gid)
		cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if err := os.Chown(dir, uid, gid); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
	}
	as := func(cmd *exec.Cmd) *exec.Cmd {
		cmd.SysProcAttr = procAttr(cred)
		return cmd
	}
	password := randomHex(16)
	pwfile := filepath.Join(dir, "pw")
	if err := os.WriteFile(pwfile, []byte(password+"\n"), 0o600); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	if cred != nil {
		os.Chown(pwfile, int(cred.Uid), int(cred.Gid))
	}
	out, err := as(exec.Command(filepath.Join(bin, "initdb"), "-D", filepath.Join(dir, "data"), "-U", "postgres",
		"--pwfile", pwfile, "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8")).CombinedOutput()
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("initdb: %v: %s", err, out)
	}
	port, err := freePort()
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	args := []string{"-D", filepath.Join(dir, "data"), "-c", "listen_addresses=127.0.0.1", "-c", "port=" + strconv.Itoa(port),
		"-c", "unix_socket_directories=" + dir, "-c", "max_connections=300", "-c", "shared_buffers=64MB"}
	if !o.Durable {
		args = append(args, "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off")
	}
	logf, err := os.Create(filepath.Join(dir, "server.log"))
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	proc := as(exec.Command(filepath.Join(bin, "postgres"), args...))
	proc.Stdout, proc.Stderr = logf, logf
	if err := proc.Start(); err != nil {
		logf.Close()
		os.RemoveAll(dir)
		return nil, fmt.Errorf("start postgres: %w", err)
	}
	logf.Close()
	c := &Cluster{URL: fmt.Sprintf("postgres://postgres:%s@127.0.0.1:%d/postgres?sslmode=disable", password, port), dir: dir, proc: proc}
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		conn, err := pgx.Connect(ctx, c.URL)
		cancel()
		if err == nil {
			conn.Close(context.Background())
			return c, nil
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dir, "server.log"))
			c.Stop()
			return nil, fmt.Errorf("postgres did not accept connections within 60s: %v\n%s", err, log)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Stop stops a cluster this package started and removes its files; for the
// server of ARX_TEST_POSTGRES it does nothing.
func (c *Cluster) Stop() {
	if c.proc == nil {
		return
	}
	c.proc.Process.Signal(syscall.SIGINT) // fast shutdown
	done := make(chan struct{})
	go func() { c.proc.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		c.proc.Process.Kill()
		<-done
	}
	os.RemoveAll(c.dir)
	c.proc = nil
}

// NewDB creates a database and its administrator role.
func (c *Cluster) NewDB(ctx context.Context) (*DB, error) {
	conn, err := pgx.Connect(ctx, c.URL)
	if err != nil {
		return nil, err
	}
	defer conn.Close(ctx)
	suffix := randomHex(6)
	db := &DB{Name: "arx_test_" + suffix, Admin: "arxadm_" + suffix, AdminPassword: randomHex(16)}
	// Identifiers made here are plain lower-case hex: safe to splice.
	for _, s := range []string{
		"CREATE ROLE " + db.Admin + " LOGIN CREATEROLE PASSWORD '" + db.AdminPassword + "'",
		// A non-superuser (CI's role with CREATEROLE) must be a member of
		// a role to make it a database's owner.
		"GRANT " + db.Admin + " TO CURRENT_USER",
		"CREATE DATABASE " + db.Name + " OWNER " + db.Admin,
	} {
		if _, err := conn.Exec(ctx, s); err != nil {
			return nil, fmt.Errorf("%s: %w", s[:20], err)
		}
	}
	u, err := url.Parse(c.URL)
	if err != nil {
		return nil, err
	}
	super := *u
	super.Path = "/" + db.Name
	db.SuperURL = super.String()
	admin := super
	admin.User = url.User(db.Admin)
	db.AdminURL = admin.String()
	return db, nil
}

// DropDB drops a database made by NewDB, and its roles.
func (c *Cluster) DropDB(ctx context.Context, db *DB) {
	conn, err := pgx.Connect(ctx, c.URL)
	if err != nil {
		return
	}
	defer conn.Close(ctx)
	conn.Exec(ctx, "DROP DATABASE IF EXISTS "+db.Name+" WITH (FORCE)")
	conn.Exec(ctx, "DROP ROLE IF EXISTS "+db.Admin)
}

// AdminConnURL is AdminURL with the password, for the test's own setup.
func (db *DB) AdminConnURL() string {
	u, _ := url.Parse(db.AdminURL)
	u.User = url.UserPassword(db.Admin, db.AdminPassword)
	return u.String()
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
