#!/bin/sh
# A stand-in for consol/debian-xfce-vnc's /dockerstartup/vnc_startup.sh
# in make e2e-engine (no registry to pull the real image from): an image
# entrypoint that must keep running under `porthole entrypoint --`. It
# prints its environment (the test checks no token reached it), then
# waits; SIGTERM makes it say so and exit 42, which the test expects as
# the container's exit code.
echo "vnc_startup: started with $*"
env | sed 's/^/vnc_startup env: /'
trap 'echo "vnc_startup: got SIGTERM"; exit 42' TERM
while :; do
  sleep 3600 &
  wait $!
done
