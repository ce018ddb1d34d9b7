# Sourced by .ci/run (and by hand: `source .ci/setup-s3.sh`): builds the S3
# server the tests use, github.com/versity/versitygw, from the Go module
# proxy once (cached), starts it on loopback with its POSIX backend and
# fixed test credentials, creates the test bucket, and exports for the tests:
#   ARX_TEST_S3_ENDPOINT ARX_TEST_S3_ACCESS_KEY ARX_TEST_S3_SECRET_KEY
#   ARX_TEST_S3_BUCKET ARX_TEST_VERSITYGW_BIN
# The server stops when the sourcing shell exits.

ARX_CI_CACHE="${ARX_CI_CACHE:-$HOME/.cache/arx-ci}"
arx_vgw_version=v1.8.0
arx_vgw_dir="$ARX_CI_CACHE/versitygw-$arx_vgw_version"
arx_vgw_bin="$arx_vgw_dir/versitygw"
if [ ! -x "$arx_vgw_bin" ]; then
  echo "== building versitygw $arx_vgw_version into $arx_vgw_dir (once; about two minutes)"
  mkdir -p "$arx_vgw_dir"
  (cd "$arx_vgw_dir" && GOBIN="$arx_vgw_dir" GOFLAGS=-buildvcs=false \
    go install "github.com/versity/versitygw/cmd/versitygw@$arx_vgw_version")
fi

# A free port on loopback: one nothing answers on.
arx_vgw_port=""
for arx_p in $(seq 17070 17170); do
  if ! (exec 3<>"/dev/tcp/127.0.0.1/$arx_p") 2>/dev/null; then
    arx_vgw_port=$arx_p
    break
  fi
done
if [ -z "$arx_vgw_port" ]; then
  echo "setup-s3: no free port in 17070..17170" >&2
  return 1 2>/dev/null || exit 1
fi

export ARX_TEST_S3_ACCESS_KEY=arxtestaccess
export ARX_TEST_S3_SECRET_KEY=arxtestsecret0123456789
export ARX_TEST_S3_BUCKET=arx-test
export ARX_TEST_S3_ENDPOINT="http://127.0.0.1:$arx_vgw_port"
export ARX_TEST_VERSITYGW_BIN="$arx_vgw_bin"

arx_vgw_root="$(mktemp -d "${TMPDIR:-/tmp}/arx-s3.XXXXXX")"
# The POSIX backend serves each top-level directory as a bucket.
mkdir -p "$arx_vgw_root/data/$ARX_TEST_S3_BUCKET"
"$arx_vgw_bin" --port "127.0.0.1:$arx_vgw_port" --access "$ARX_TEST_S3_ACCESS_KEY" \
  --secret "$ARX_TEST_S3_SECRET_KEY" --quiet posix "$arx_vgw_root/data" >"$arx_vgw_root/versitygw.log" 2>&1 &
ARX_TEST_S3_PID=$!
arx_s3_cleanup() { kill "$ARX_TEST_S3_PID" 2>/dev/null || true; rm -rf "$arx_vgw_root"; }
# Keep an EXIT trap another setup script set.
arx_prev_exit="$(trap -p EXIT)"
arx_prev_exit="${arx_prev_exit#trap -- \'}"
arx_prev_exit="${arx_prev_exit%\' EXIT}"
trap "arx_s3_cleanup; $arx_prev_exit" EXIT

for arx_i in $(seq 1 100); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$arx_vgw_port") 2>/dev/null; then
    break
  fi
  if ! kill -0 "$ARX_TEST_S3_PID" 2>/dev/null || [ "$arx_i" = 100 ]; then
    echo "setup-s3: versitygw did not start:" >&2
    cat "$arx_vgw_root/versitygw.log" >&2
    return 1 2>/dev/null || exit 1
  fi
  sleep 0.1
done
echo "== S3 server (versitygw $arx_vgw_version) at $ARX_TEST_S3_ENDPOINT, bucket $ARX_TEST_S3_BUCKET"
