# Sourced by .ci/run (and by hand: `source .ci/setup-tlog-tools.sh`): the
# third-party transparency-log tools the interoperability tests
# (internal/thirdparty) run against ARX, built from the Go module proxy once
# (cached), and OpenSSH's agent from Debian's packages, which litewitness
# signs through. Exports:
#   ARX_TEST_LITEWITNESS ARX_TEST_WITNESSCTL   filippo.io/torchwood
#   ARX_TEST_TESSERA_FSCK ARX_TEST_TESSERA_ONESHOT  github.com/transparency-dev/tessera

ARX_CI_CACHE="${ARX_CI_CACHE:-$HOME/.cache/arx-ci}"
arx_torchwood_version=v0.6.1
arx_tessera_version=v1.0.4
arx_tlog_dir="$ARX_CI_CACHE/tlog-tools-torchwood-$arx_torchwood_version-tessera-$arx_tessera_version"
source "$(dirname "${BASH_SOURCE[0]}")/go-install.sh"
arx_go_install "$arx_tlog_dir" posix-oneshot \
  "filippo.io/torchwood/cmd/litewitness@$arx_torchwood_version" \
  "filippo.io/torchwood/cmd/witnessctl@$arx_torchwood_version" \
  "github.com/transparency-dev/tessera/cmd/fsck@$arx_tessera_version" \
  "github.com/transparency-dev/tessera/cmd/examples/posix-oneshot@$arx_tessera_version" || { return 1 2>/dev/null || exit 1; }
if ! command -v ssh-agent >/dev/null || ! command -v ssh-keygen >/dev/null; then
  echo "== installing openssh-client (ssh-agent, for litewitness)"
  if [ -z "${ARX_APT_UPDATED:-}" ]; then
    apt-get update
    export ARX_APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y openssh-client
fi
export ARX_TEST_LITEWITNESS="$arx_tlog_dir/litewitness"
export ARX_TEST_WITNESSCTL="$arx_tlog_dir/witnessctl"
export ARX_TEST_TESSERA_FSCK="$arx_tlog_dir/fsck"
export ARX_TEST_TESSERA_ONESHOT="$arx_tlog_dir/posix-oneshot"
echo "== litewitness, witnessctl $arx_torchwood_version; Tessera fsck, posix-oneshot $arx_tessera_version; $(ssh -V 2>&1)"
