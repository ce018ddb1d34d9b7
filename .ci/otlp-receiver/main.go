// Command otlp-receiver runs the OpenTelemetry Collector's own OTLP
// receiver (go.opentelemetry.io/collector/receiver/otlpreceiver) over
// HTTP on the address in its first argument, and prints every span it
// receives as one line of OTLP JSON (one ResourceSpans batch per line) on
// standard output. ARX's tracing tests (internal/api) send it what arx
// serve exports with --otlp-endpoint; .ci/setup-otlp.sh builds it from
// the Go module proxy. It is its own module, so that the collector's
// dependencies stay out of ARX's.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"sync"
	"syscall"

	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/config/configgrpc"
	"go.opentelemetry.io/collector/config/configoptional"
	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/receiver/otlpreceiver"
	"go.opentelemetry.io/collector/receiver/receivertest"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: otlp-receiver 127.0.0.1:PORT")
		os.Exit(2)
	}
	factory := otlpreceiver.NewFactory()
	cfg := factory.CreateDefaultConfig().(*otlpreceiver.Config)
	cfg.Protocols.GRPC = configoptional.None[configgrpc.ServerConfig]()
	cfg.Protocols.HTTP.GetOrInsertDefault().ServerConfig.NetAddr.Endpoint = os.Args[1]
	var mu sync.Mutex
	var m ptrace.JSONMarshaler
	sink, err := consumer.NewTraces(func(_ context.Context, td ptrace.Traces) error {
		b, err := m.MarshalTraces(td)
		if err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		_, err = os.Stdout.Write(append(b, '\n'))
		return err
	})
	if err != nil {
		fail(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	r, err := factory.CreateTraces(ctx, receivertest.NewNopSettings(factory.Type()), cfg, sink)
	if err != nil {
		fail(err)
	}
	if err := r.Start(ctx, componenttest.NewNopHost()); err != nil {
		fail(err)
	}
	fmt.Fprintln(os.Stderr, "otlp-receiver: listening on", os.Args[1])
	<-ctx.Done()
	if err := r.Shutdown(context.Background()); err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "otlp-receiver:", err)
	os.Exit(1)
}
