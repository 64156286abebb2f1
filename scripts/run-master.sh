#!/bin/sh
# make run: porthole-master with its embedded store, plus two demo
# machines, each a `porthole entrypoint` (agent connected to the master
# through its outbound tunnel) running the bootstrapper with fixture
# installers: "web" reaches RUNNING, "db" fails with a readable error.
# The agents record their terminal sessions (-record, in the temporary
# directory), and a short demo session is run on "web", so the dashboard's
# process list has a recording to Replay.
# Prints the dashboard URL with a client token. Ctrl-C stops everything.
set -eu
addr=${1:-127.0.0.1:8080}
root=$(pwd)
dir=$(mktemp -d)
master_pid=
machine_pids=
cleanup() {
  trap - EXIT INT TERM
  # The machines first (their last events still reach the master), then
  # the master.
  # shellcheck disable=SC2086
  [ -n "$machine_pids" ] && kill -TERM $machine_pids 2>/dev/null && wait $machine_pids 2>/dev/null || true
  [ -n "$master_pid" ] && kill -TERM "$master_pid" 2>/dev/null && wait "$master_pid" 2>/dev/null || true
  rm -rf "$dir"
  echo "stopped"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

rid=demo:default:you
who=$(printf %s "${USER:-demo}" | tr -c 'A-Za-z0-9._@+-' '_')   # a token name's characters
./bin/porthole-master token -init -data "$dir/master" -client -name "${who:-demo}" > "$dir/client.token"
for m in web db; do
  ./bin/porthole-master token -data "$dir/master" -runtime-id "$rid" -machine-name "$m" > "$dir/$m.token"
done

./bin/porthole-master -listen "$addr" -data "$dir/master" -binaries "$root/bin" 2> "$dir/master.log" &
master_pid=$!
i=0
until curl -fsS "http://$addr/healthz" >/dev/null 2>&1; do
  i=$((i+1))
  if [ $i -gt 100 ]; then echo "porthole-master did not start:"; cat "$dir/master.log"; exit 1; fi
  sleep 0.1
done

# A free port for the web machine's server.
port=$(( 20000 + $(od -An -N2 -tu2 /dev/urandom | tr -d ' ') % 20000 ))
sed "s/PORT/$port/g" fixtures/demo/web.json > "$dir/web.json"
cp fixtures/demo/db.json "$dir/db.json"

for m in web db; do
  mkdir -p "$dir/$m" "$dir/$m/recordings"
  DEMO_DIR="$dir/$m" CHE_MACHINE_TOKEN=$(cat "$dir/$m.token") \
  ./bin/porthole entrypoint -listen none -master "ws://$addr" -machine-token-file "$dir/$m.token" \
      -runtime-id "$rid" -machine-name "$m" -log-level warn -ports own -record "$dir/$m/recordings" \
      -bootstrap "-file $dir/$m.json -push-endpoint ws://$addr/api/websocket -push-logs-endpoint ws://$addr/api/websocket-minor -runtime-id $rid -machine-name $m -enable-auth -installer-timeout 30 -flush-timeout 3s -log-level warn" \
      -grace 2s 2> "$dir/$m.log" &
  machine_pids="$machine_pids $!"
done

tok=$(cat "$dir/client.token")
# A recorded terminal session on "web", once its agent is connected.
demo='{"jsonrpc":"2.0","id":1,"method":"process.start","params":{"name":"recorded demo","tty":true,"argv":["sh","-c","echo this session is recorded; for i in 1 2 3; do date; sleep 1; done; echo bye"]}}'
i=0
until curl -fsS -H "Authorization: Bearer $tok" -H 'Content-Type: application/json' \
    -d "$demo" "http://$addr/api/runtimes/$rid/machines/web/agent/v1/rpc" 2>/dev/null | grep -q '"result"'; do
  i=$((i+1))
  if [ $i -gt 100 ]; then echo "(the web machine's agent did not connect: no demo recording; see $dir/web.log)"; break; fi
  sleep 0.1
done
cat <<MSG
porthole-master on http://$addr with two demo machines (Ctrl-C stops everything)

  Dashboard:     http://$addr/#token=$tok
  Client token:  $tok

  curl -s -H "Authorization: Bearer $tok" http://$addr/api/runtimes
  ./bin/porthole exec -url ws://$addr/api/runtimes/$rid/machines/web/agent -- uname -a   (with PORTHOLE_TOKEN=<client token>)

Logs: $dir/{master,web,db}.log   Recordings: $dir/{web,db}/recordings
MSG
if [ ! -f master/dashboard/dist/index.html ] && [ ! -f web/dashboard/dist/index.html ]; then
  echo "(the dashboard's assets are not built: the page says how; 'make web' builds them with npm)"
fi
# Wait for Ctrl-C, or for the master to end.
wait "$master_pid"
