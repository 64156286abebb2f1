#!/bin/sh
# make run: start a porthole agent on ADDR with a fresh token, serving the
# browser terminal when npm could build it, and show how to use it. Ctrl-C
# stops the agent, which hangs up and reaps its children.
set -eu
addr=${1:-127.0.0.1:4444}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
tokfile=$dir/token
head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$tokfile"
tok=$(cat "$tokfile")

web=
if command -v npm >/dev/null 2>&1; then
  if [ -f web/terminal/dist/index.html ] || make -s web >"$dir/web.log" 2>&1; then
    web="-web web/terminal/dist"
  else
    echo "(the browser terminal was not built: see 'make web'; $(tail -n 1 "$dir/web.log"))"
  fi
else
  echo "(npm not found: no browser terminal; the CLI works without it)"
fi

echo "porthole agent on ws://$addr (Ctrl-C to stop)"
echo
if [ -n "$web" ]; then
  echo "Browser terminal:  http://$addr/#token=$tok"
  echo
fi
cat <<MSG
In another terminal:
  export PORTHOLE_TOKEN=$tok PORTHOLE_URL=ws://$addr
  ./bin/porthole exec -it -- /bin/sh      # a shell, like docker exec -it
  ./bin/porthole exec -- sh -c 'echo hi; exit 3'; echo \$?
  ./bin/porthole ps

MSG
# Not exec: the shell stays to remove the token file after the agent stops.
# shellcheck disable=SC2086
./bin/porthole agent -listen "$addr" -token-file "$tokfile" $web
