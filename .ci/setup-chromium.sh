# Sourced by .ci/run: installs Debian's chromium for the console's browser
# tests (internal/console) when it is missing. Needs root (CI runs as root).
if [ ! -x /usr/bin/chromium ]; then
  echo "== installing chromium for the console's browser tests"
  if [ -z "${ARX_APT_UPDATED:-}" ]; then
    apt-get update
    export ARX_APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y chromium
fi
/usr/bin/chromium --version
