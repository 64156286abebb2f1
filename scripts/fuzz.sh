#!/usr/bin/env bash
# make fuzz: every native Go fuzz target (func FuzzXxx) of every package,
# each for FUZZTIME (default 30s), one after the other. A failure stops the
# run; go test has then written the input that failed under the package's
# testdata/fuzz/FuzzXxx/, where `go test` (and so make test and CI) runs it
# from then on with the seed corpus: keep it there with the fix.
#   scripts/fuzz.sh [FUZZTIME] [PACKAGE...]   (default 30s, ./...)
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime=${1:-30s}
shift || true
pkgs=("$@")
[ ${#pkgs[@]} -gt 0 ] || pkgs=(./...)
n=0
for dir in $(go list -f '{{.Dir}}' "${pkgs[@]}"); do
  pkg=./${dir#"$PWD"/}
  for target in $(cat "$dir"/*_test.go 2>/dev/null | sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p'); do
    echo "fuzz: $pkg $target for $fuzztime"
    go test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" "$pkg"
    n=$((n + 1))
  done
done
echo "fuzz: $n targets, $fuzztime each, nothing found"
