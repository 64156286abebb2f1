#!/usr/bin/env bash
# make lint: gofmt, go vet, staticcheck and govulncheck, at pinned versions
# installed from the Go module proxy into a cache directory.
#
# govulncheck normally reads https://vuln.go.dev, which CI machines may not
# reach. The same database is published as the module golang.org/x/vulndb
# (its OSV files); it is fetched through the module proxy and indexed with
# its own cmd/indexdb into a local v1 database, cached per version.
set -euo pipefail
cd "$(dirname "$0")/.."
STATICCHECK=honnef.co/go/tools/cmd/staticcheck@v0.8.2
GOVULNCHECK=golang.org/x/vuln/cmd/govulncheck@v1.9.0
VULNDB_VERSION=${VULNDB_VERSION:-latest}

# The tools are installed into a cache directory, not onto PATH.
tools=${XDG_CACHE_HOME:-$HOME/.cache}/porthole/tools
GOBIN=$tools go install "$STATICCHECK"
GOBIN=$tools go install "$GOVULNCHECK"

echo "lint: gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go'))
if [ -n "$unformatted" ]; then
  echo "lint: gofmt would change: $unformatted" >&2
  exit 1
fi
echo "lint: go vet"
go vet ./...
go vet -tags engine ./deploy/e2e/   # make e2e-engine's test, behind its build tag
go vet -tags faults ./faults/         # make faults's suite, behind its build tag
echo "lint: staticcheck ($STATICCHECK)"
"$tools/staticcheck" ./...
"$tools/staticcheck" -tags engine ./deploy/e2e/
"$tools/staticcheck" -tags faults ./faults/

echo "lint: govulncheck ($GOVULNCHECK, database golang.org/x/vulndb@$VULNDB_VERSION)"
info=$(cd /tmp && go mod download -json "golang.org/x/vulndb@$VULNDB_VERSION")
dir=$(sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p' <<<"$info")
version=$(sed -n 's/^[[:space:]]*"Version": "\(.*\)",$/\1/p' <<<"$info")
[ -d "$dir/data/osv" ] || { echo "lint: golang.org/x/vulndb@$VULNDB_VERSION has no data/osv" >&2; exit 1; }
db=${XDG_CACHE_HOME:-$HOME/.cache}/porthole/vulndb-$version
if [ ! -f "$db/index/db.json" ]; then
  rm -rf "$db.tmp"
  (cd /tmp && GOFLAGS=-mod=mod go run "golang.org/x/vulndb/cmd/indexdb@$version" -vulns "$dir/data/osv" -out "$db.tmp")
  mv "$db.tmp" "$db"
fi
# govulncheck exits 3 when the code calls a vulnerable function. Findings
# in modules fail the lint: a go.mod upgrade fixes them. Findings in the
# standard library are the Go toolchain's: this machine builds with its own
# Go (GOTOOLCHAIN=local), so they are printed as a warning naming the Go
# release that fixes them, and fail only with LINT_STDLIB=strict.
set +e
out=$("$tools/govulncheck" -db "file://$db" ./... 2>&1)
rc=$?
set -e
echo "$out"
case $rc in
0) exit 0 ;;
3) ;;
*) echo "lint: govulncheck failed (exit $rc)" >&2; exit $rc ;;
esac
modules=$(grep -E '^[[:space:]]+Found in: ' <<<"$out" | grep -vE '@go[0-9]' || true)
if [ -n "$modules" ]; then
  echo "lint: vulnerable module code is called:" >&2
  echo "$modules" >&2
  exit 1
fi
fixed=$(grep -E '^[[:space:]]+Fixed in: ' <<<"$out" | sed 's/.*@//' | sort -uV | tail -1)
echo "lint: WARNING: the findings above are in the standard library of $(go env GOVERSION); build releases with ${fixed:-a newer Go} or later"
[ "${LINT_STDLIB:-}" != strict ] || exit 1
