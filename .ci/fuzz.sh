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
    out=$(mktemp)
    if go test -run='^$' -fuzz="^${target}\$" -fuzztime="$fuzztime" "$pkg" >"$out" 2>&1; then
      tail -3 "$out"
    else
      # Everything the fuzzer said, and the input it saved, so that the
      # failure can be reproduced from the CI log alone.
      cat "$out"
      git ls-files --others --exclude-standard -- "$pkg/testdata/fuzz" | while read -r f; do
        echo "-- $f"; cat "$f"
      done
      rm -f "$out"
      exit 1
    fi
    rm -f "$out"
  done
done
