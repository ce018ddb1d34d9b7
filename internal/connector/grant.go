package connector

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
)

// Grant is one privilege grant a postgres action gives the call's role:
// "SELECT ON orders", "SELECT, INSERT ON TABLE sales.orders",
// "USAGE ON SCHEMA sales", "SELECT ON ALL TABLES IN SCHEMA sales". It is
// parsed into parts and rendered with quoted identifiers by the backend, so
// no text of the configuration reaches the database as SQL.
type Grant struct {
	Privileges []string // upper case: SELECT, INSERT, ...; ALL
	Object     string   // ObjectTable, ObjectSequence, ObjectSchema, ObjectAllTables, ObjectAllSequences
	Schema     string   // "" for the search path (tables, sequences); the schema for the others
	Name       string   // the table or sequence; "" for the schema kinds
}

// Grant objects.
const (
	ObjectTable        = "TABLE"
	ObjectSequence     = "SEQUENCE"
	ObjectSchema       = "SCHEMA"
	ObjectAllTables    = "ALL TABLES IN SCHEMA"
	ObjectAllSequences = "ALL SEQUENCES IN SCHEMA"
)

var privileges = map[string][]string{
	ObjectTable:        {"SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER", "ALL"},
	ObjectAllTables:    {"SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER", "ALL"},
	ObjectSequence:     {"USAGE", "SELECT", "UPDATE", "ALL"},
	ObjectAllSequences: {"USAGE", "SELECT", "UPDATE", "ALL"},
	ObjectSchema:       {"USAGE", "CREATE", "ALL"},
}

// identRE is an unquoted SQL identifier, folded to lower case as PostgreSQL
// folds it.
var identRE = regexp.MustCompile(`^[a-z_][a-z0-9_$]{0,62}$`)

// ParseGrant parses "PRIVILEGE[, ...] ON [TABLE|SEQUENCE|SCHEMA|ALL TABLES IN
// SCHEMA|ALL SEQUENCES IN SCHEMA] NAME". Names are unquoted identifiers,
// optionally schema-qualified for tables and sequences.
func ParseGrant(s string) (Grant, error) {
	fields := strings.Fields(s)
	on := slices.IndexFunc(fields, func(f string) bool { return strings.EqualFold(f, "ON") })
	if on < 1 || on == len(fields)-1 {
		return Grant{}, errors.New(`want "PRIVILEGE[, ...] ON [TABLE|SEQUENCE|SCHEMA|ALL TABLES IN SCHEMA] NAME", such as "SELECT ON orders"`)
	}
	var g Grant
	for _, p := range strings.Split(strings.Join(fields[:on], " "), ",") {
		p = strings.ToUpper(strings.TrimSpace(p))
		if p == "ALL PRIVILEGES" {
			p = "ALL"
		}
		if p == "" {
			return Grant{}, errors.New("empty privilege in the list")
		}
		g.Privileges = append(g.Privileges, p)
	}
	rest := fields[on+1:]
	upper := strings.ToUpper(strings.Join(rest, " "))
	g.Object = ObjectTable
	for _, obj := range []string{ObjectAllTables, ObjectAllSequences, ObjectTable, ObjectSequence, ObjectSchema} {
		if strings.HasPrefix(upper, obj+" ") {
			g.Object = obj
			rest = rest[len(strings.Fields(obj)):]
			break
		}
	}
	if len(rest) != 1 {
		return Grant{}, errors.New("want exactly one object name after ON (no spaces, no lists)")
	}
	name := strings.ToLower(rest[0])
	switch g.Object {
	case ObjectTable, ObjectSequence:
		schema, rel, qualified := strings.Cut(name, ".")
		if !qualified {
			schema, rel = "", schema
		}
		if qualified && !identRE.MatchString(schema) || !identRE.MatchString(rel) {
			return Grant{}, fmt.Errorf("%q is not a plain (optionally schema-qualified) SQL name", rest[0])
		}
		g.Schema, g.Name = schema, rel
	default:
		if !identRE.MatchString(name) {
			return Grant{}, fmt.Errorf("%q is not a plain SQL schema name", rest[0])
		}
		g.Schema = name
	}
	allowed := privileges[g.Object]
	for _, p := range g.Privileges {
		if !slices.Contains(allowed, p) {
			return Grant{}, fmt.Errorf("privilege %q does not apply to %s (allowed: %s)", p, strings.ToLower(g.Object), strings.Join(allowed, ", "))
		}
	}
	return g, nil
}

// String renders the grant in a normal form (without the grantee).
func (g Grant) String() string {
	target := g.Schema
	if g.Object == ObjectTable || g.Object == ObjectSequence {
		target = g.Name
		if g.Schema != "" {
			target = g.Schema + "." + g.Name
		}
	}
	return strings.Join(g.Privileges, ", ") + " ON " + g.Object + " " + target
}
