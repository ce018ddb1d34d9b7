#!/usr/bin/env bash
# Builds the Python SDK's distributions into OUTDIR:
#
#   agentvault-VERSION-py3-none-PLATFORM.whl  one per platform, each holding
#       the SDK and the arx binary cross-compiled for it (CGO off, stripped),
#       installed as the `arx` command beside the interpreter, where local-only
#       mode finds it: no Go and nothing else on PATH needed;
#   agentvault-VERSION.tar.gz                 the SDK's source alone (no arx).
#
# Usage: scripts/python-wheels.sh OUTDIR [--host]
#   --host  only the wheel for this machine's platform (and the sdist)
#
# Needs Go, and a python3 with setuptools and wheel (Debian: python3-setuptools
# python3-wheel) to build with; the wheels themselves need neither.
set -euo pipefail

usage() { echo "usage: $0 OUTDIR [--host]" >&2; exit 2; }
[ $# -ge 1 ] || usage
out=$1; shift
host=false
for a in "$@"; do
  case $a in
    --host) host=true ;;
    *) usage ;;
  esac
done

root=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$out"
out=$(cd "$out" && pwd)

# The Python to build with: Debian's, which has setuptools and wheel, when
# the first python3 on PATH lacks them.
py=""
for cand in "${PYTHON:-}" python3 /usr/bin/python3; do
  [ -n "$cand" ] || continue
  if command -v "$cand" >/dev/null && "$cand" -c 'import setuptools, wheel' 2>/dev/null; then
    py=$cand; break
  fi
done
if [ -z "$py" ]; then
  echo "python-wheels: no python3 with setuptools and wheel to build with" >&2
  echo "hint: apt-get install python3-setuptools python3-wheel (or set PYTHON)" >&2
  exit 1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# platform: GOOS GOARCH and the wheel's platform tags (static binaries: any
# glibc or musl Linux; Go 1.26 needs macOS 12 or later).
platforms=(
  "linux amd64 manylinux_2_17_x86_64 manylinux2014_x86_64 musllinux_1_1_x86_64"
  "linux arm64 manylinux_2_17_aarch64 manylinux2014_aarch64 musllinux_1_1_aarch64"
  "darwin amd64 macosx_12_0_x86_64"
  "darwin arm64 macosx_12_0_arm64"
  "windows amd64 win_amd64"
)
if $host; then
  hos=$(go env GOOS) harch=$(go env GOARCH)
  sel=()
  for p in "${platforms[@]}"; do
    read -r os arch _ <<<"$p"
    [ "$os/$arch" = "$hos/$harch" ] && sel+=("$p")
  done
  [ ${#sel[@]} -eq 1 ] || { echo "python-wheels: no wheel for $hos/$harch" >&2; exit 1; }
  platforms=("${sel[@]}")
fi

# The SDK's pure wheel and sdist, built by setuptools from a copy (so the
# build leaves nothing in the tree), without a package index.
cp -r "$root/sdks/agentvault-py" "$work/sdk"
rm -rf "$work/sdk/build" "$work/sdk"/src/*.egg-info
(cd "$work/sdk" && PYTHONWARNINGS=ignore "$py" -m pip wheel --quiet --no-deps --no-build-isolation --no-index -w "$work/pure" . >/dev/null)
(cd "$work/sdk" && PYTHONWARNINGS=ignore "$py" -c 'import sys; from setuptools import build_meta as b; print(b.build_sdist(sys.argv[1]))' "$out" >/dev/null)
pure=$(ls "$work"/pure/agentvault-*-py3-none-any.whl)
"$py" -m wheel unpack --dest "$work/unpacked" "$pure" >/dev/null
tree=$(ls -d "$work"/unpacked/agentvault-*)
name=$(basename "$tree") # agentvault-VERSION

for p in "${platforms[@]}"; do
  read -r os arch tags <<<"$p"
  exe=arx
  [ "$os" = windows ] && exe=arx.exe
  echo "== $name for $os/$arch"
  w="$work/$os-$arch/$name"
  mkdir -p "$(dirname "$w")"
  cp -r "$tree" "$w"
  mkdir -p "$w/$name.data/scripts"
  (cd "$root" && CGO_ENABLED=0 GOOS=$os GOARCH=$arch go build -trimpath -ldflags='-s -w' -o "$w/$name.data/scripts/$exe" ./cmd/arx)
  chmod 0755 "$w/$name.data/scripts/$exe"
  # Not pure any more: the tags say which platform the binary runs on.
  wheelfile="$w/$name.dist-info/WHEEL"
  {
    grep -v -e '^Root-Is-Purelib:' -e '^Tag:' "$wheelfile"
    echo "Root-Is-Purelib: false"
    for t in $tags; do echo "Tag: py3-none-$t"; done
  } >"$wheelfile.new"
  mv "$wheelfile.new" "$wheelfile"
  rm -f "$w/$name.dist-info/RECORD" # wheel pack writes it again, with the binary
  "$py" -m wheel pack --dest-dir "$out" "$w" >/dev/null
done
ls -l "$out"
