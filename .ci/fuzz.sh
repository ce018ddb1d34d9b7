#!/usr/bin/env bash
# Runs every fuzz target for a short, fixed time (FUZZTIME, default 3s).
# Crashes the fuzzer finds are written under the package's testdata/fuzz and
# become regression tests that `go test` runs on every build.
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime=${FUZZTIME:-3s}
grep -rl --include='*_test.go' '^func Fuzz' . | sort | while read -r file; do
  pkg=./$(dirname "${file#./}")
  for target in $(grep -o '^func Fuzz[A-Za-z0-9_]*' "$file" | sed 's/^func //'); do
    echo "== fuzz $pkg $target ($fuzztime)"
    go test -run='^$' -fuzz="^${target}\$" -fuzztime="$fuzztime" "$pkg" 2>&1 | tail -3
  done
done
