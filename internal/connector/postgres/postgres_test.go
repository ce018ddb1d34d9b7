package postgres

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/arxsec/arx/internal/connector"
	"github.com/arxsec/arx/internal/connector/postgres/pgtest"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

const testConfig = `connectors:
  warehouse:
    kind: postgres
    upstream: %s
    secret: env:WAREHOUSE_PASSWORD
    max_connections: 2
    actions:
      orders.query:
        grants: ["SELECT ON orders", "USAGE ON SCHEMA sales", "SELECT ON sales.customers"]
      orders.write:
        grants: ["SELECT, INSERT ON TABLE orders"]
`

// setup makes a database with tables, as its administrator, and the
// connector for it.
func setup(t *testing.T) (*pgtest.DB, *Connector) {
	t.Helper()
	return setupTB(t)
}

func setupTB(t testing.TB) (*pgtest.DB, *Connector) {
	t.Helper()
	db := pgtest.New(t)
	ctx := t.Context()
	conn, err := pgx.Connect(ctx, db.AdminConnURL())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	for _, s := range []string{
		`CREATE TABLE orders (id int PRIMARY KEY, account text, amount int)`,
		`INSERT INTO orders VALUES (1, '0017', 100), (2, '0042', 250)`,
		`CREATE TABLE secrets (v text)`,
		`CREATE SCHEMA sales`,
		`CREATE TABLE sales.customers (id int, name text)`,
	} {
		if _, err := conn.Exec(ctx, s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
	cfg, err := connector.Parse(fmt.Appendf(nil, testConfig, db.AdminURL))
	if err != nil {
		t.Fatal(err)
	}
	c, err := New(cfg.Connectors[0], db.AdminPassword)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return db, c
}

func password() string { return strings.Repeat("p", 10) + uuid.NewString() }

func TestProvisionUseRevoke(t *testing.T) {
	_, c := setup(t)
	ctx := t.Context()
	call := connector.Call{ID: uuid.NewString(), Action: "orders.query", Expiry: time.Now().Add(time.Minute), Password: password()}
	dsn, err := c.Provision(ctx, call)
	if err != nil {
		t.Fatal(err)
	}
	if again, err := c.Provision(ctx, call); err != nil || again != dsn {
		t.Fatalf("provision is not idempotent: %v", err)
	}
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connect with the call's DSN: %v", err)
	}
	var sum int
	if err := conn.QueryRow(ctx, `SELECT sum(amount) FROM orders`).Scan(&sum); err != nil || sum != 350 {
		t.Fatalf("granted query: %d %v", sum, err)
	}
	if _, err := conn.Exec(ctx, `SELECT count(*) FROM sales.customers`); err != nil {
		t.Fatalf("granted schema-qualified query: %v", err)
	}
	for _, q := range []string{`SELECT * FROM secrets`, `INSERT INTO orders VALUES (3, 'x', 1)`, `CREATE TABLE mine (x int)`} {
		_, err := conn.Exec(ctx, q)
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || pe.Code != "42501" {
			t.Errorf("%s: want permission denied, got %v", q, err)
		}
	}
	ids, err := c.Provisioned(ctx)
	if err != nil || len(ids) != 1 || ids[0] != call.ID {
		t.Fatalf("provisioned: %v %v", ids, err)
	}
	existed, err := c.Revoke(ctx, call.ID)
	if err != nil || !existed {
		t.Fatalf("revoke: %v %v", existed, err)
	}
	// The open session was ended, and the role cannot log in again.
	if err := conn.Ping(ctx); err == nil {
		t.Error("the role's session survived the revocation")
	}
	conn.Close(ctx)
	if c2, err := pgx.Connect(ctx, dsn); err == nil {
		c2.Close(ctx)
		t.Fatal("the DSN still logs in after the revocation")
	}
	if existed, err := c.Revoke(ctx, call.ID); err != nil || existed {
		t.Fatalf("second revoke: %v %v", existed, err)
	}
	if ids, _ := c.Provisioned(ctx); len(ids) != 0 {
		t.Fatalf("roles left: %v", ids)
	}
}

func TestValidUntil(t *testing.T) {
	_, c := setup(t)
	ctx := t.Context()
	call := connector.Call{ID: uuid.NewString(), Action: "orders.query", Expiry: time.Now().Add(-time.Second), Password: password()}
	dsn, err := c.Provision(ctx, call)
	if err != nil {
		t.Fatal(err)
	}
	if conn, err := pgx.Connect(ctx, dsn); err == nil {
		conn.Close(ctx)
		t.Fatal("a role past its call's expiry logs in")
	}
	wrong := strings.Replace(dsn, call.Password, password(), 1)
	call.Expiry = time.Now().Add(time.Minute)
	c.Revoke(ctx, call.ID)
	if _, err := c.Provision(ctx, call); err != nil {
		t.Fatal(err)
	}
	if conn, err := pgx.Connect(ctx, wrong); err == nil {
		conn.Close(ctx)
		t.Fatal("a wrong password logs in")
	}
	c.Revoke(ctx, call.ID)
}

func TestProvisionRefusesBadInput(t *testing.T) {
	_, c := setup(t)
	ctx := t.Context()
	for _, call := range []connector.Call{
		{ID: "x'; DROP TABLE orders; --", Action: "orders.query", Password: password(), Expiry: time.Now().Add(time.Minute)},
		{ID: uuid.NewString(), Action: "orders.drop", Password: password(), Expiry: time.Now().Add(time.Minute)},
		{ID: uuid.NewString(), Action: "orders.query", Password: "short", Expiry: time.Now().Add(time.Minute)},
	} {
		if _, err := c.Provision(ctx, call); err == nil {
			t.Errorf("provision %+v: no error", call.ID)
		}
	}
}

func TestUnreachableHidesSecret(t *testing.T) {
	cfg, err := connector.Parse([]byte(fmt.Sprintf(testConfig, "postgres://admin@127.0.0.1:1/db")))
	if err != nil {
		t.Fatal(err)
	}
	const secret = "s3cr3t-admin-password-value"
	c, err := New(cfg.Connectors[0], secret)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = c.Provision(context.Background(), connector.Call{ID: uuid.NewString(), Action: "orders.query", Password: password(), Expiry: time.Now().Add(time.Minute)})
	if err == nil || strings.Contains(err.Error(), secret) || strings.Contains(fmt.Sprintf("%v %+v %#v", c, c, c), secret) {
		t.Fatalf("error or formatting leaks the secret, or no error: %v", err)
	}
}

func TestScramVerifierShape(t *testing.T) {
	v := scramVerifier("password", "0190f3c2-0000-7000-8000-000000000000")
	if !strings.HasPrefix(v, "SCRAM-SHA-256$"+strconv.Itoa(ScramIterations)+":") || strings.Count(v, "$") != 2 || strings.Contains(v, "password") {
		t.Fatalf("verifier %s", v)
	}
	if got := CallOfRole(RoleName("0190f3c2-0000-7000-8000-00000000abcd")); got != "0190f3c2-0000-7000-8000-00000000abcd" {
		t.Fatalf("role round trip: %s", got)
	}
	if CallOfRole("arx_test") != "" || CallOfRole("arx") != "" {
		t.Fatal("foreign roles taken for call roles")
	}
}

// TestConcurrentProvisionRevoke: many roles made and dropped at once, in
// shared transactions, some twice: each made with its grants, each drop
// answered once as existing, none left.
func TestConcurrentProvisionRevoke(t *testing.T) {
	_, c := setup(t)
	ctx := t.Context()
	const n = 100
	calls := make([]connector.Call, n)
	for i := range calls {
		calls[i] = connector.Call{ID: uuid.NewString(), Action: "orders.query", Expiry: time.Now().Add(time.Minute), Password: password()}
	}
	dsns := make([]string, n)
	errs := make(chan error, 2*n)
	var wg sync.WaitGroup
	for i := range 2 * n { // each call provisioned twice, concurrently
		wg.Go(func() {
			dsn, err := c.Provision(ctx, calls[i%n])
			if err != nil {
				errs <- err
				return
			}
			if i < n {
				dsns[i] = dsn
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for _, i := range []int{0, n / 2, n - 1} {
		conn, err := pgx.Connect(ctx, dsns[i])
		if err != nil {
			t.Fatalf("connect with role %d: %v", i, err)
		}
		var sum int
		if err := conn.QueryRow(ctx, `SELECT sum(amount) FROM orders`).Scan(&sum); err != nil || sum != 350 {
			t.Fatalf("granted query: %d %v", sum, err)
		}
		conn.Close(ctx)
	}
	if ids, _ := c.Provisioned(ctx); len(ids) != n {
		t.Fatalf("%d roles, want %d", len(ids), n)
	}
	var existed atomic.Int64
	errs = make(chan error, 2*n)
	for i := range 2 * n { // each role dropped twice, concurrently
		wg.Go(func() {
			ok, err := c.Revoke(ctx, calls[i%n].ID)
			if err != nil {
				errs <- err
			}
			if ok {
				existed.Add(1)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if existed.Load() != n {
		t.Fatalf("%d drops found their role, want %d", existed.Load(), n)
	}
	if ids, _ := c.Provisioned(ctx); len(ids) != 0 {
		t.Fatalf("roles left: %d", len(ids))
	}
}

// TestRoleCannotOutliveItsCall makes the attack of a per-call role that
// wants to stay: during its call it sets its own password, connects to
// another database of the cluster (CONNECT is granted to PUBLIC there, as
// by default) and makes large objects there and here, which DROP OWNED in
// the connector's database alone does not reach. After the revocation the
// role is gone, with what it made, and neither the DSN nor its own
// password logs in anywhere.
func TestRoleCannotOutliveItsCall(t *testing.T) {
	db, c := setup(t)
	ctx := t.Context()
	other := otherDatabase(t, db, true)
	call := connector.Call{ID: uuid.NewString(), Action: "orders.query", Expiry: time.Now().Add(time.Minute), Password: password()}
	dsn, err := c.Provision(ctx, call)
	if err != nil {
		t.Fatal(err)
	}
	if warnings, err := c.Check(ctx); err != nil || !slices.ContainsFunc(warnings, func(w string) bool { return strings.Contains(w, other) }) {
		t.Errorf("Check: %q, %v; want a warning naming %s", warnings, err, other)
	}
	own := "a password of the role's own choosing"
	in, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := in.Exec(ctx, "ALTER ROLE CURRENT_USER PASSWORD "+literal(own)+"; SELECT lo_create(0)"); err != nil {
		t.Fatalf("the attack's first step: %v", err)
	}
	elsewhere := withDatabase(t, withPassword(t, dsn, own), other)
	there, err := pgx.Connect(ctx, elsewhere)
	if err != nil {
		t.Fatalf("the role connects to %s: %v", other, err)
	}
	if _, err := there.Exec(ctx, "SELECT lo_create(0)"); err != nil {
		t.Fatalf("a large object in %s: %v", other, err)
	}
	existed, err := c.Revoke(ctx, call.ID)
	if err != nil || !existed {
		t.Fatalf("revoke: %v %v", existed, err)
	}
	for _, conn := range []*pgx.Conn{in, there} {
		if err := conn.Ping(ctx); err == nil {
			t.Error("a session of the role survived the revocation")
		}
		conn.Close(ctx)
	}
	for _, u := range []string{dsn, withPassword(t, dsn, own), elsewhere} {
		if conn, err := pgx.Connect(ctx, u); err == nil {
			conn.Close(ctx)
			t.Errorf("%s logs in after the revocation", u[:strings.Index(u, "@")])
		}
	}
	if ids, _ := c.Provisioned(ctx); len(ids) != 0 {
		t.Fatalf("roles left: %v", ids)
	}
}

// otherDatabase makes another database in the test's cluster, as the
// superuser: reachable by every role (CONNECT to PUBLIC, the default) or
// by none but the superuser.
func otherDatabase(t *testing.T, db *pgtest.DB, public bool) string {
	t.Helper()
	ctx := t.Context()
	name := "arx_other_" + strings.ReplaceAll(uuid.NewString()[:8], "-", "")
	super, err := pgx.Connect(ctx, db.SuperURL)
	if err != nil {
		t.Fatal(err)
	}
	defer super.Close(ctx)
	if _, err := super.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if s, err := pgx.Connect(context.Background(), db.SuperURL); err == nil {
			s.Exec(context.Background(), "DROP DATABASE "+name+" WITH (FORCE)")
			s.Close(context.Background())
		}
	})
	if !public {
		if _, err := super.Exec(ctx, "REVOKE CONNECT, TEMPORARY ON DATABASE "+name+" FROM PUBLIC"); err != nil {
			t.Fatal(err)
		}
	}
	return name
}

func withDatabase(t *testing.T, dsn, name string) string {
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	u.Path = "/" + name
	return u.String()
}

func withPassword(t *testing.T, dsn, password string) string {
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword(u.User.Username(), password)
	return u.String()
}

// TestBatchFailsAlone: a role that cannot be dropped (it owns an object in
// a database the connector's user cannot reach) fails its own drop,
// saying why, not the drops that shared its batch; and it cannot log in
// meanwhile, though it set its own password.
func TestBatchFailsAlone(t *testing.T) {
	db, c := setup(t)
	ctx := t.Context()
	calls := make([]connector.Call, 8)
	dsns := make([]string, len(calls))
	for i := range calls {
		calls[i] = connector.Call{ID: uuid.NewString(), Action: "orders.query", Expiry: time.Now().Add(time.Minute), Password: password()}
		var err error
		if dsns[i], err = c.Provision(ctx, calls[i]); err != nil {
			t.Fatal(err)
		}
	}
	own := "a password of the role's own choosing"
	in, err := pgx.Connect(ctx, dsns[0])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := in.Exec(ctx, "ALTER ROLE CURRENT_USER PASSWORD "+literal(own)); err != nil {
		t.Fatal(err)
	}
	in.Close(ctx)
	// The first call's role owns a schema in a database only the
	// superuser reaches.
	other := otherDatabase(t, db, false)
	superThere := withDatabase(t, db.SuperURL, other)
	o, err := pgx.Connect(ctx, superThere)
	if err != nil {
		t.Fatal(err)
	}
	_, err = o.Exec(ctx, "GRANT "+RoleName(calls[0].ID)+" TO CURRENT_USER; CREATE SCHEMA stuck AUTHORIZATION "+RoleName(calls[0].ID))
	o.Close(ctx)
	if err != nil {
		t.Fatal(err)
	}
	results := make([]error, len(calls))
	var wg sync.WaitGroup
	for i := range calls {
		wg.Go(func() { _, results[i] = c.Revoke(ctx, calls[i].ID) })
	}
	wg.Wait()
	if results[0] == nil {
		t.Fatal("the role that owns a schema elsewhere was dropped")
	}
	if !strings.Contains(results[0].Error(), other) || strings.Contains(results[0].Error(), db.AdminPassword) {
		t.Errorf("the failure does not name the database, or names the secret: %v", results[0])
	}
	for i, err := range results[1:] {
		if err != nil {
			t.Errorf("drop %d failed with its neighbour: %v", i+1, err)
		}
	}
	if ids, _ := c.Provisioned(ctx); len(ids) != 1 || ids[0] != calls[0].ID {
		t.Fatalf("roles left: %v", ids)
	}
	for _, u := range []string{dsns[0], withPassword(t, dsns[0], own)} {
		if conn, err := pgx.Connect(ctx, u); err == nil {
			conn.Close(ctx)
			t.Error("the role that could not be dropped still logs in")
		}
	}
	o, err = pgx.Connect(ctx, superThere)
	if err != nil {
		t.Fatal(err)
	}
	o.Exec(ctx, "DROP SCHEMA stuck")
	o.Close(ctx)
	if existed, err := c.Revoke(ctx, calls[0].ID); err != nil || !existed {
		t.Fatalf("drop after the schema went: %v %v", existed, err)
	}
}
