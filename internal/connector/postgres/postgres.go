// Package postgres is the postgres connector: for each call ARX creates a
// database role that can log in only until the call's expiry and holds only
// the grants of the call's action, hands the agent a DSN for it, and drops
// the role when the call ends. The connector's own (administrative)
// password never leaves ARX.
//
// The role's password is chosen by ARX per call and sent to PostgreSQL only
// as a SCRAM-SHA-256 verifier (RFC 5802, RFC 7677), so it appears in no
// statement and no server log.
package postgres

import (
	"context"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/arxsec/arx/internal/connector"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// RolePrefix starts the name of every role ARX makes; the call id (32 hex
// digits) follows.
const RolePrefix = "arx_"

// ScramIterations is the PBKDF2 iteration count of the roles' SCRAM
// verifiers. A per-call password carries 256 random bits, so stretching
// adds nothing against guessing it, and it costs on every role: ARX
// derives the verifier, PostgreSQL runs the full PBKDF2 again when the role
// is created (CREATE ROLE checks the secret against the empty password),
// and the agent's client on each login. At PostgreSQL's default of 4096
// that was a third of the CPU of a create, use and drop cycle. RFC 7677
// asks for at least 4096 for passwords people choose; a checker that flags
// lower counts will flag these roles.
const ScramIterations = 16

// Connector is a postgres connector.
type Connector struct {
	spec   connector.Spec
	pool   *pgxpool.Pool
	agent  *url.URL // the upstream, for the DSNs handed to agents
	secret string   // for scrubbing errors only

	creates, drops batcher[*request] // batch.go
}

var _ connector.Provisioner = (*Connector)(nil)

// New returns the connector for spec, administering with its resolved
// secret (the password of the upstream's user). It does not connect yet.
func New(spec connector.Spec, secret string) (*Connector, error) {
	if spec.Kind != connector.KindPostgres {
		return nil, fmt.Errorf("postgres: connector %s is of kind %s", spec.Name, spec.Kind)
	}
	u, err := url.Parse(spec.Upstream)
	if err != nil || u.User == nil || u.Host == "" {
		return nil, fmt.Errorf("postgres: connector %s: upstream is not a postgres://USER@HOST/DB URL", spec.Name)
	}
	cfg, err := pgxpool.ParseConfig(spec.Upstream)
	if err != nil {
		return nil, fmt.Errorf("postgres: connector %s: upstream: %s", spec.Name, scrub(err.Error(), secret))
	}
	cfg.ConnConfig.Password = secret
	cfg.ConnConfig.ConnectTimeout = min(spec.Timeout, 10*time.Second)
	cfg.MaxConns = 4
	cfg.MinConns = 0
	cfg.MaxConnIdleTime = 5 * time.Minute
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres: connector %s: %s", spec.Name, scrub(err.Error(), secret))
	}
	agent := *u
	agent.User = nil
	c := &Connector{spec: spec, pool: pool, agent: &agent, secret: secret}
	c.creates.flush, c.creates.flushers = c.flushCreates, createFlushers
	c.drops.flush, c.drops.flushers = c.flushDrops, 1
	return c, nil
}

func (c *Connector) Name() string               { return c.spec.Name }
func (c *Connector) Kind() string               { return connector.KindPostgres }
func (c *Connector) Info() connector.Info       { return c.spec.Info() }
func (c *Connector) String() string             { return "postgres.Connector{" + c.spec.Name + "}" }
func (c *Connector) Format(f fmt.State, _ rune) { fmt.Fprint(f, c.String()) }

// Close closes the administrative connections.
func (c *Connector) Close() error {
	c.pool.Close()
	return nil
}

var callIDRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

// Resource implements connector.Provisioner: the role of a call.
func (c *Connector) Resource(callID string) string { return RoleName(callID) }

// RoleName is the role of a call: "arx_" and the call id's 32 hex digits.
func RoleName(callID string) string { return RolePrefix + strings.ReplaceAll(callID, "-", "") }

var roleRE = regexp.MustCompile(`^arx_([0-9a-f]{8})([0-9a-f]{4})([0-9a-f]{4})([0-9a-f]{4})([0-9a-f]{12})$`)

// CallOfRole is the call id a role name stands for, or "".
func CallOfRole(role string) string {
	m := roleRE.FindStringSubmatch(role)
	if m == nil {
		return ""
	}
	return strings.Join(m[1:], "-")
}

// Provision implements connector.Provisioner: it creates the call's role
// with the action's grants in one transaction (so a role never exists with
// half its grants), or finds it made by an earlier attempt.
func (c *Connector) Provision(ctx context.Context, call connector.Call) (string, error) {
	if !callIDRE.MatchString(call.ID) {
		return "", fmt.Errorf("postgres: call id %q is not a UUID", call.ID)
	}
	if len(call.Password) < 32 {
		return "", errors.New("postgres: the call's password is too short")
	}
	a, ok := c.spec.Action(call.Action)
	if !ok {
		return "", fmt.Errorf("postgres: connector %s has no grants for action %s", c.spec.Name, call.Action)
	}
	role := RoleName(call.ID)
	ctx, cancel := context.WithTimeout(ctx, c.spec.Timeout)
	defer cancel()
	create := "CREATE ROLE " + ident(role) + " WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT NOREPLICATION" +
		" CONNECTION LIMIT " + strconv.Itoa(c.spec.MaxConnections) +
		" PASSWORD " + literal(scramVerifier(call.Password, call.ID)) +
		" VALID UNTIL " + literal(call.Expiry.UTC().Format("2006-01-02 15:04:05.999999Z07:00"))
	var grants []string
	for _, g := range a.Grants {
		grants = append(grants, grantSQL(g, role))
	}
	// One transaction in one round trip, shared with the concurrent
	// Provisions (batch.go).
	q := newRequest(ctx, role, create, grants)
	c.creates.submit(q)
	if err := q.wait(); err != nil {
		return "", c.fail("create role", err)
	}
	return c.dsn(role, call.Password), nil
}

func (c *Connector) dsn(role, password string) string {
	u := *c.agent
	u.User = url.UserPassword(role, password)
	return u.String()
}

// Revoke implements connector.Provisioner: no new logins, the role's
// sessions ended, its privileges and objects in the database dropped, the
// role dropped.
func (c *Connector) Revoke(ctx context.Context, callID string) (bool, error) {
	if !callIDRE.MatchString(callID) {
		return false, fmt.Errorf("postgres: call id %q is not a UUID", callID)
	}
	ctx, cancel := context.WithTimeout(ctx, c.spec.Timeout)
	defer cancel()
	// One transaction, shared with the concurrent Revokes (batch.go).
	q := newRequest(ctx, RoleName(callID), "", nil)
	c.drops.submit(q)
	if err := q.wait(); err != nil {
		return true, c.fail("drop role", err)
	}
	return q.existed, nil
}

// grantLock serializes the grants and revocations of ARX's roles in one
// database, across replicas: PostgreSQL fails two concurrent GRANTs on the
// same object with "tuple concurrently updated" (both update its ACL).
const grantLock = `SELECT pg_advisory_xact_lock(hashtext('arx.connector.grants'))`

// Provisioned implements connector.Provisioner: the calls whose roles exist.
func (c *Connector) Provisioned(ctx context.Context) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, c.spec.Timeout)
	defer cancel()
	rows, err := c.pool.Query(ctx, `SELECT rolname FROM pg_roles WHERE rolname LIKE 'arx\_%' ORDER BY rolname`)
	if err != nil {
		return nil, c.fail("list roles", err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, c.fail("list roles", err)
	}
	var out []string
	for _, n := range names {
		if id := CallOfRole(n); id != "" {
			out = append(out, id)
		}
	}
	return out, nil
}

var _ connector.Checker = (*Connector)(nil)

// Check implements connector.Checker: the other databases of the cluster
// that every role may connect to (CONNECT granted to PUBLIC, PostgreSQL's
// default). A per-call role can log in there during its call and make
// objects (a large object) that ARX then has to find and drop; a database
// the connector's user cannot reach keeps such a role from being dropped.
func (c *Connector) Check(ctx context.Context) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, c.spec.Timeout)
	defer cancel()
	rows, err := c.pool.Query(ctx, `SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate
		AND datname <> current_database() AND has_database_privilege('public', datname, 'CONNECT') ORDER BY 1`)
	if err != nil {
		return nil, c.fail("check databases", err)
	}
	dbs, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, c.fail("check databases", err)
	}
	var out []string
	for _, db := range dbs {
		out = append(out, fmt.Sprintf("database %s lets every role connect (CONNECT granted to PUBLIC), the per-call roles "+
			"of connector %s included; run: REVOKE CONNECT ON DATABASE %s FROM PUBLIC", ident(db), c.spec.Name, ident(db)))
	}
	return out, nil
}

// fail describes a database failure without the secret, should a driver
// ever repeat it.
func (c *Connector) fail(what string, err error) error {
	return fmt.Errorf("postgres: connector %s: %s: %s", c.spec.Name, what, scrub(err.Error(), c.secret))
}

func scrub(s, secret string) string {
	if secret != "" {
		s = strings.ReplaceAll(s, secret, "REDACTED")
	}
	return s
}

// ident quotes an identifier. Names reaching here were checked by the
// configuration parser or made by ARX; quoting keeps them inert anyway.
func ident(s string) string { return pgx.Identifier{s}.Sanitize() }

func literal(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

func grantSQL(g connector.Grant, role string) string {
	privs := make([]string, len(g.Privileges))
	for i, p := range g.Privileges {
		if p == "ALL" {
			p = "ALL PRIVILEGES"
		}
		privs[i] = p
	}
	var target string
	switch g.Object {
	case connector.ObjectTable, connector.ObjectSequence:
		target = g.Object + " " + ident(g.Name)
		if g.Schema != "" {
			target = g.Object + " " + pgx.Identifier{g.Schema, g.Name}.Sanitize()
		}
	default:
		target = g.Object + " " + ident(g.Schema)
	}
	return "GRANT " + strings.Join(privs, ", ") + " ON " + target + " TO " + ident(role)
}

// scramVerifier is the SCRAM-SHA-256 secret PostgreSQL stores for a
// password (RFC 5802 §3, RFC 7677): SCRAM-SHA-256$iter:salt$StoredKey:ServerKey.
// The salt is derived from the call id: one role, one salt.
func scramVerifier(password, callID string) string {
	salt := sha256.Sum256([]byte("arx scram salt\x00" + callID))
	salted, err := pbkdf2.Key(sha256.New, password, salt[:16], ScramIterations, sha256.Size)
	if err != nil {
		panic(err) // fixed, valid parameters
	}
	clientKey := hmacSum(salted, "Client Key")
	storedKey := sha256.Sum256(clientKey)
	serverKey := hmacSum(salted, "Server Key")
	b64 := base64.StdEncoding.EncodeToString
	return "SCRAM-SHA-256$" + strconv.Itoa(ScramIterations) + ":" + b64(salt[:16]) + "$" + b64(storedKey[:]) + ":" + b64(serverKey)
}

func hmacSum(key []byte, msg string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(msg))
	return m.Sum(nil)
}
