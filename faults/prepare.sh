#!/usr/bin/env bash
# make faults, before the tests: the fault-injection suite needs root,
# iproute2 (ip netns, veth) and iptables (with the statistic match). As
# root, install what is missing from Debian's packages; as another user,
# say what is missing (the tests then skip, except under CI, where they
# fail: the suite must not pass by running nothing).
set -euo pipefail
need=()
command -v ip >/dev/null || need+=(iproute2)
command -v iptables >/dev/null || need+=(iptables)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "faults: missing ${need[*]} and not root: the suite needs root; it will skip (or fail under CI)" >&2
    exit 0
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}"
fi
