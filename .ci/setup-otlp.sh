# Sourced by .ci/run (and by hand: `source .ci/setup-otlp.sh`): a real OTLP
# receiver for the tracing tests (internal/api), the OpenTelemetry
# Collector's otlpreceiver built from the Go module proxy (.ci/otlp-receiver,
# its own module) once per version (cached). Exports ARX_TEST_OTLP_RECEIVER.

ARX_CI_CACHE="${ARX_CI_CACHE:-$HOME/.cache/arx-ci}"
arx_otlp_sum=$(cat "$(dirname "${BASH_SOURCE[0]}")/otlp-receiver/go.sum" "$(dirname "${BASH_SOURCE[0]}")/otlp-receiver/main.go" | sha256sum | cut -c1-16)
arx_otlp_dir="$ARX_CI_CACHE/otlp-receiver-$arx_otlp_sum"
if [ ! -x "$arx_otlp_dir/otlp-receiver" ]; then
  echo "== building the OTLP receiver (go.opentelemetry.io/collector/receiver/otlpreceiver) into $arx_otlp_dir (once)"
  mkdir -p "$arx_otlp_dir"
  (cd "$(dirname "${BASH_SOURCE[0]}")/otlp-receiver" && GOFLAGS=-buildvcs=false go build -o "$arx_otlp_dir/otlp-receiver" .) || {
    rm -f "$arx_otlp_dir/otlp-receiver"
    return 1 2>/dev/null || exit 1
  }
fi
export ARX_TEST_OTLP_RECEIVER="$arx_otlp_dir/otlp-receiver"
echo "== OTLP receiver: $(grep 'collector/receiver/otlpreceiver ' "$(dirname "${BASH_SOURCE[0]}")/otlp-receiver/go.mod" | xargs)"
