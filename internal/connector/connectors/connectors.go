// Package connectors opens the backends a connectors file configures: each
// kind in its own package (httpconn, postgres), picked by the spec's kind.
package connectors

import (
	"errors"
	"fmt"
	"io"

	"github.com/arxsec/arx/internal/connector"
	"github.com/arxsec/arx/internal/connector/httpconn"
	"github.com/arxsec/arx/internal/connector/postgres"
)

// Open resolves each connector's secret with resolve and opens its backend.
// Nothing connects yet: a system of record that is down at start fails its
// calls, not ARX's start. Errors name the connector and the reference,
// never a secret's value.
func Open(cfg *connector.Config, resolve connector.Resolver) ([]connector.Connector, error) {
	var out []connector.Connector
	fail := func(err error) ([]connector.Connector, error) {
		Close(out)
		return nil, err
	}
	for _, spec := range cfg.Connectors {
		secret, err := resolve(spec.Secret)
		if err != nil {
			return fail(fmt.Errorf("connector %s: secret %s: %w", spec.Name, spec.Secret, err))
		}
		var c connector.Connector
		switch spec.Kind {
		case connector.KindHTTP:
			c, err = httpconn.New(spec, secret, nil)
		case connector.KindPostgres:
			c, err = postgres.New(spec, secret)
		default:
			err = fmt.Errorf("connector %s: unknown kind %q", spec.Name, spec.Kind)
		}
		if err != nil {
			return fail(err)
		}
		out = append(out, c)
	}
	return out, nil
}

// Close closes the connectors that hold resources.
func Close(cs []connector.Connector) error {
	var errs []error
	for _, c := range cs {
		if cl, ok := c.(io.Closer); ok {
			errs = append(errs, cl.Close())
		}
	}
	return errors.Join(errs...)
}
