# Sourced by the .ci/setup-*.sh scripts that build a tool from the Go module
# proxy. arx_go_install DIR BIN PKG@VERSION...: go install the packages into
# DIR, once: nothing is done when DIR/BIN is there (the cache); a failed
# build leaves no DIR/BIN behind and returns non-zero.
arx_go_install() {
  local dir=$1 bin=$2 pkg
  shift 2
  [ -x "$dir/$bin" ] && return 0
  echo "== building $* into $dir (once)"
  mkdir -p "$dir"
  for pkg in "$@"; do
    (cd "$dir" && GOBIN="$dir" GOFLAGS=-buildvcs=false go install "$pkg") || {
      rm -f "$dir/$bin"
      return 1
    }
  done
}
