#!/usr/bin/env bash
# make stress: the timing-sensitive packages under the race detector, many
# times over, while busy loops keep every core busy. A test that passes
# here does not depend on the scheduler being idle.
#   scripts/stress.sh [COUNT]   (default 10; .ci/run uses 3)
set -euo pipefail
cd "$(dirname "$0")/.."
count=${1:-10}
pkgs=(./agent/... ./bootstrapper/... ./cli/... ./client/... ./entrypoint/... ./internal/... ./master/...)
hogs=()
stop() { [ ${#hogs[@]} -eq 0 ] || kill "${hogs[@]}" 2>/dev/null || true; }
trap stop EXIT
for _ in $(seq "$(nproc)"); do
  sh -c 'while :; do :; done' &
  hogs+=($!)
done
echo "stress: ${#hogs[@]} busy loops, -race -count=$count ${pkgs[*]}"
go test -race -count="$count" -timeout 40m "${pkgs[@]}"
