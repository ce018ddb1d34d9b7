package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/arxsec/arx/internal/arxtest"
	"github.com/arxsec/arx/internal/connector"
	"github.com/arxsec/arx/internal/connector/postgres/pgtest"
	"github.com/arxsec/arx/internal/server"
	salesresearch "github.com/arxsec/arx/reference-agents/sales-research"
)

func TestConnectorsLintAndList(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "connectors.yaml")
	os.WriteFile(good, salesresearch.ConnectorsYAML("http://127.0.0.1:1/api", "CRM_KEY", "postgres://admin@127.0.0.1:1/wh", "WH_PW"), 0o644)
	if code, out, _ := arx(t, "connectors", "lint", good); code != 0 || !strings.Contains(out, "valid") || !strings.Contains(out, "env:CRM_KEY") {
		t.Fatalf("lint: %d %s", code, out)
	}
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("connectors:\n  crm:\n    kind: http\n    upstream: http://x\n    secret: the-secret-itself\n    actions: {r: {allow: [\"GET /\"]}}\n"), 0o644)
	code, out, _ := arx(t, "connectors", "lint", bad)
	if code != 1 || !strings.Contains(out, bad+":5: connectors.crm.secret") || strings.Contains(out, "the-secret-itself") {
		t.Fatalf("lint of a bad file: %d %s", code, out)
	}

	// serve resolves secrets from the environment; a missing one stops it
	// with the reference, not a value.
	t.Setenv("CRM_KEY", "")
	if _, err := loadConnectors(good); err == nil || !strings.Contains(err.Error(), "env:CRM_KEY") {
		t.Fatalf("missing secret: %v", err)
	}
	t.Setenv("CRM_KEY", "k-123456")
	t.Setenv("WH_PW", "pw-123456")
	cs, err := loadConnectors(good)
	if err != nil {
		t.Fatal(err)
	}
	s := arxtest.StartWith(t, t.TempDir(), func(c *server.Config) { c.Connectors = cs })
	code, out, errOut := arx(t, "connectors", "list", "--server", s.URL, "--token", s.AdminToken)
	if code != 0 || !strings.Contains(out, "salesforce") || !strings.Contains(out, "GET /accounts/*") || !strings.Contains(out, "SELECT ON TABLE orders") {
		t.Fatalf("list: %d %s %s", code, out, errOut)
	}
	if strings.Contains(out, "k-123456") || strings.Contains(out, "pw-123456") {
		t.Fatal("list shows a secret")
	}
	var _ connector.Info
}

// TestDevWithPostgres runs arx dev with the warehouse: a database role per
// call, next to the CRM behind the gateway.
func TestDevWithPostgres(t *testing.T) {
	db := pgtest.New(t)
	code, out, stderr := arx(t, "dev", "--once", "--listen", "127.0.0.1:0", "--data", t.TempDir(), "--postgres", db.AdminConnURL())
	if code != 0 {
		t.Fatalf("arx dev --postgres: %d\n%s\n%s", code, out, stderr)
	}
	for _, want := range []string{"10 governed calls (1 outside the role, recorded as drift), 1 refusal recorded, 0 failures", "2 orders in the warehouse, EUR 60000",
		"refused at the gateway", "gateway.request", "OK: "} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, db.AdminPassword) {
		t.Error("the output shows the warehouse password")
	}
	if testing.Verbose() {
		t.Log(out)
	}
	_ = fmt.Sprint
}

// TestConnectorSecretFilePrivate: a connector's secret file that other
// accounts may read is refused, naming the file and the fix, not the value.
func TestConnectorSecretFilePrivate(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "crm.token")
	if err := os.WriteFile(p, []byte("S3CRET-CRM\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ref := connector.SecretRef{Source: "file", Name: p}
	if v, err := resolveSecret(ref); err != nil || v != "S3CRET-CRM" {
		t.Fatalf("a private secret file: %q, %v", v, err)
	}
	if err := os.Chmod(p, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := resolveSecret(ref)
	if err == nil || !strings.Contains(err.Error(), "chmod 600 "+p) || strings.Contains(err.Error(), "S3CRET") {
		t.Errorf("a world-readable secret file: %v", err)
	}
}
