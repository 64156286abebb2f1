#!/bin/sh
# make run: start a porthole agent on ADDR with a fresh token and show how to
# use it. Ctrl-C stops the agent, which hangs up and reaps its children.
set -eu
addr=${1:-127.0.0.1:4444}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
tokfile=$dir/token
head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$tokfile"
tok=$(cat "$tokfile")
cat <<MSG
porthole agent on ws://$addr (Ctrl-C to stop)

In another terminal:
  export PORTHOLE_TOKEN=$tok PORTHOLE_URL=ws://$addr
  ./bin/porthole exec -it -- /bin/sh      # a shell, like docker exec -it
  ./bin/porthole exec -- sh -c 'echo hi; exit 3'; echo \$?
  ./bin/porthole ps

MSG
exec ./bin/porthole agent -listen "$addr" -token-file "$tokfile"
