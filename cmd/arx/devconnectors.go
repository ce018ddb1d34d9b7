package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"time"

	"github.com/arxsec/arx/internal/connector"
	"github.com/arxsec/arx/internal/connector/connectors"
	salesresearch "github.com/arxsec/arx/reference-agents/sales-research"
	"github.com/jackc/pgx/v5"
)

// demoSystems are the systems of record of arx dev: the demo CRM behind the
// gateway (connector salesforce), with an API key only ARX holds, and, when
// a PostgreSQL is given, the order warehouse (connector warehouse).
type demoSystems struct {
	crm        *salesresearch.CRM
	crmURL     string
	srv        *http.Server
	connectors []connector.Connector
	warehouse  bool
}

func startDemoSystems(ctx context.Context, postgresURL string) (*demoSystems, error) {
	var b [24]byte
	rand.Read(b[:])
	key := "crm_" + hex.EncodeToString(b[:])
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	d := &demoSystems{crm: salesresearch.NewGatewayCRM(key), crmURL: "http://" + ln.Addr().String()}
	d.srv = &http.Server{Handler: d.crm, ReadHeaderTimeout: 5 * time.Second}
	go d.srv.Serve(ln)
	// The secrets come from memory here; arx serve reads them from the
	// environment or files (--connectors).
	secrets := map[string]string{"ARX_DEV_CRM_KEY": key}
	warehouse := ""
	if postgresURL != "" {
		u, err := url.Parse(postgresURL)
		if err != nil || u.User == nil {
			d.Close()
			return nil, withHint(errors.New("--postgres is not a postgres://USER:PASSWORD@HOST/DB URL"), "the user needs CREATEROLE and a database it may create a table in")
		}
		pw, _ := u.User.Password()
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		conn, err := pgx.Connect(cctx, postgresURL)
		if err == nil {
			_, err = conn.Exec(cctx, salesresearch.WarehouseSchema)
			conn.Close(cctx)
		}
		cancel()
		if err != nil {
			d.Close()
			return nil, fmt.Errorf("--postgres: preparing the demo warehouse: %w", err)
		}
		u.User = url.User(u.User.Username())
		warehouse = u.String()
		secrets["ARX_DEV_WAREHOUSE_PASSWORD"] = pw
		d.warehouse = true
	}
	cfg, err := connector.Parse(salesresearch.ConnectorsYAML(d.crmURL, "ARX_DEV_CRM_KEY", warehouse, "ARX_DEV_WAREHOUSE_PASSWORD"))
	if err != nil {
		d.Close()
		return nil, err
	}
	d.connectors, err = connectors.Open(cfg, func(ref connector.SecretRef) (string, error) {
		if v, ok := secrets[ref.Name]; ok && v != "" {
			return v, nil
		}
		return "", fmt.Errorf("%s is not set", ref.Name)
	})
	if err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}

func (d *demoSystems) Close() { d.srv.Close() }
