#!/usr/bin/env bash
# A rootful podman for porthole's real-engine end-to-end test (make
# e2e-engine), kept apart from the host: its own mount namespace (a tmpfs
# store, the cgroup view podman needs), its own network namespace (host
# networking of pods is this namespace's loopback, so the manifests' ports
# 4444, 4445 and 8080 collide with nothing on the machine), its own config.
#
#   engine.sh install            apt-get what the test needs (as root)
#   engine.sh up                 start the namespaces and write the config
#   engine.sh pm ARGS...         podman inside them
#   engine.sh run CMD ARGS...    any command inside them (mount + network)
#   engine.sh debian-rootfs      print a cached Debian minbase tarball's path
#   engine.sh down               remove every pod, container, volume, secret
#                                and image of the store; end the namespaces
#
# Workarounds are applied only when this machine needs them; `up` prints
# which it detected (and writes them to $PE_WORK/detected). The reasons:
#
#  cgroup-move   A hybrid cgroup v1/v2 layout (tmpfs /sys/fs/cgroup with v1
#                controllers, cgroup2 at /sys/fs/cgroup/unified): crun and
#                runc refuse it ("hybrid mode not supported"). In the private
#                mount namespace a cgroup2 directory of ours ($PE_CGROUP) is
#                moved over /sys/fs/cgroup, so podman sees a pure v2 tree
#                rooted there. The host's mounts are untouched. Not applied
#                on a pure cgroup v2 (or pure v1) host.
#  cgroupfs      No systemd as PID 1: cgroup_manager = "cgroupfs" (else
#                podman's default, systemd).
#  events-file   No journald socket: events_logger = "file".
#  ulimits       Root without CAP_SYS_RESOURCE cannot raise a limit above
#                its hard limit, and podman's default nofile=1048576 fails
#                ("error setting rlimit type 7"): default_ulimits lowered to
#                our hard limits (nproc capped at kernel.pid_max, which
#                conmon/runc are held to).
#  no-pids       The pids controller is not in the cgroup v2 tree (bound to
#                v1): pids_limit = 0, else runc fails writing pids.max.
#  runc          crun 1.8 raises RLIMIT_MEMLOCK before loading its device
#                eBPF program and fails without CAP_SYS_RESOURCE; runc
#                ignores that error. We install runc and use it everywhere
#                (the setting is written only when crun would be chosen).
#  pod-devices   podman 4.3 with cgroupfs on cgroup v2 attaches a deny-all
#                device eBPF program to each pod's cgroup ("open /dev/null:
#                operation not permitted" for every container of a pod):
#                runc goes through runc-podfix, which detaches it (see there).
#                Applied for podman < 4.4 with cgroupfs on v2; seen with
#                4.3.1, the 4.4 cut is an estimate. Where nothing is
#                attached the wrapper detaches nothing.
#  enable-controller  Our cgroup v2 directory has no controller (all are
#                bound to v1): podman 4.3 then fails writing an empty
#                cgroup.subtree_control. One controller the v2 root has is
#                enabled for its children, and disabled again at `down`.
#  no-memory     The memory/cpu controllers are not in the v2 tree: the
#                e2e cannot apply the manifests' resource limits and says so.
set -euo pipefail

PE_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
: "${PE_WORK:=/tmp/porthole-engine}"
: "${PE_CGROUP:=porthole_engine_e2e}"
: "${PE_TMPFS_SIZE:=4g}"
: "${PE_CACHE:=${XDG_CACHE_HOME:-$HOME/.cache}/porthole}"
: "${PE_SUITE:=bookworm}"

die() { echo "engine.sh: $*" >&2; exit 1; }

cmd_install() {
  local pkgs=(podman runc conmon catatonit netavark bpftool jq busybox-static debootstrap qemu-user-static iproute2 util-linux ca-certificates)
  local missing=() p
  for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "engine.sh: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # --no-install-recommends keeps out buildah, fuse-overlayfs, slirp4netns,
    # uidmap: not needed by rootful podman with host networking.
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
  podman --version
}

# The host's cgroup2 mount point: /sys/fs/cgroup on a pure v2 host, else
# the cgroup2 mount of a hybrid layout; empty on a pure v1 host.
cgroup2_root() {
  if [ "$(stat -f -c %T /sys/fs/cgroup)" = cgroup2fs ]; then
    echo /sys/fs/cgroup
  else
    awk '$9 == "cgroup2" { print $5; exit }' /proc/self/mountinfo
  fi
}

holder_pid() {
  local pid
  pid=$(cat "$PE_WORK/holder.pid" 2>/dev/null) || return 1
  [ -n "$pid" ] && [ -e "/proc/$pid" ] &&
    [ "$(readlink "/proc/$pid/ns/mnt")" != "$(readlink /proc/self/ns/mnt)" ] &&
    grep -qz '^PE_MARK=porthole-engine-holder$' "/proc/$pid/environ" 2>/dev/null && echo "$pid"
}

has_cap() { # has_cap BIT: whether this process has capability BIT
  local eff
  eff=$(awk '/^CapEff:/ { print $2 }' /proc/self/status)
  (( (16#$eff >> $1) & 1 ))
}

version_lt() { # version_lt A B: A < B (dotted numbers)
  [ "$1" != "$2" ] && [ "$(printf '%s\n%s\n' "$1" "$2" | sort -V | head -1)" = "$1" ]
}

cmd_up() {
  [ "$(id -u)" = 0 ] || die "run as root (rootful podman)"
  if holder_pid >/dev/null; then cat "$PE_WORK/detected"; return 0; fi
  command -v podman >/dev/null || die "podman is not installed: run '$0 install' (or make e2e-engine)"
  local cg2 move=0 cgroot detected=() manager=systemd events=journald
  local nofile nproc pidmax ulimits="" pids="" runtime="" podfix=0 pv
  mkdir -p "$PE_WORK"
  pv=$(podman --version | awk '{print $3}')
  cg2=$(cgroup2_root)
  if [ "$(stat -f -c %T /sys/fs/cgroup)" != cgroup2fs ] && [ -n "$cg2" ]; then
    move=1; detected+=(cgroup-move)
    mkdir -p "$cg2/$PE_CGROUP"
    cgroot="$cg2/$PE_CGROUP"
    # podman 4.3 enables every controller of its cgroup root in each
    # level's cgroup.subtree_control and fails ("write
    # cgroup.subtree_control: invalid argument") when there is none to
    # enable: give our directory one of the few the v2 root has (hugetlb
    # here), and take it back at `down` if nothing else uses it.
    if [ -z "$(cat "$cgroot/cgroup.controllers")" ]; then
      local ctl
      ctl=$(awk '{ print $1 }' "$cg2/cgroup.controllers")
      [ -n "$ctl" ] || die "the cgroup v2 hierarchy at $cg2 has no controller at all: podman $pv cannot create pod cgroups in it"
      echo "+$ctl" > "$cg2/cgroup.subtree_control"
      echo "$ctl" > "$PE_WORK/enabled-controller"
      detected+=(enable-controller)
    fi
  else
    cgroot=/sys/fs/cgroup
  fi
  if [ ! -d /run/systemd/system ]; then manager=cgroupfs; detected+=(cgroupfs); fi
  if [ ! -S /run/systemd/journal/socket ]; then events=file; detected+=(events-file); fi
  if ! has_cap 24; then # CAP_SYS_RESOURCE
    detected+=(ulimits)
    nofile=$(ulimit -Hn); [ "$nofile" = unlimited ] && nofile=1048576
    nproc=$(ulimit -Hu); [ "$nproc" = unlimited ] && nproc=4194304
    pidmax=$(cat /proc/sys/kernel/pid_max)
    [ "$nofile" -gt 1048576 ] && nofile=1048576
    [ "$nproc" -gt "$pidmax" ] && nproc=$pidmax
    ulimits="default_ulimits = [\"nofile=$nofile:$nofile\", \"nproc=$nproc:$nproc\"]"
    if command -v crun >/dev/null; then runtime='runtime = "runc"'; detected+=(runc); fi
  fi
  if [ -n "$cg2" ] && ! grep -qw pids "$cgroot/cgroup.controllers" 2>/dev/null; then
    pids="pids_limit = 0"; detected+=(no-pids)
  fi
  if [ -n "$cg2" ] && ! grep -qw memory "$cgroot/cgroup.controllers" 2>/dev/null; then
    detected+=(no-memory)
  fi
  if [ -n "$cg2" ] && [ "$manager" = cgroupfs ] && version_lt "$pv" 4.4; then
    podfix=1; detected+=(pod-devices)
    command -v bpftool >/dev/null && command -v jq >/dev/null || die "pod-devices needs bpftool and jq: run '$0 install'"
  fi

  mkdir -p "$PE_WORK/cgmnt" "$PE_WORK/store"
  cat > "$PE_WORK/storage.conf" <<EOF
[storage]
driver = "overlay"
graphroot = "$PE_WORK/store/storage"
runroot = "$PE_WORK/store/run"
EOF
  {
    echo "# written by scripts/engine/engine.sh up; detected: ${detected[*]:-nothing}"
    echo "[containers]"
    [ -n "$ulimits" ] && echo "$ulimits"
    [ -n "$pids" ] && echo "$pids"
    echo "[engine]"
    echo "cgroup_manager = \"$manager\""
    echo "events_logger = \"$events\""
    echo "tmp_dir = \"$PE_WORK/store/libpod-tmp\""
    echo "volume_path = \"$PE_WORK/store/volumes\""
    if [ "$podfix" = 1 ]; then
      echo 'runtime = "runc"'
      echo "[engine.runtimes]"
      echo "runc = [\"$PE_DIR/runc-podfix\"]"
    elif [ -n "$runtime" ]; then
      echo "$runtime"
    fi
    # netavark, not CNI (whose plugins Debian does not install with podman
    # without recommends); pods here use host networking anyway.
    if [ -x /usr/lib/podman/netavark ]; then printf '[network]\nnetwork_backend = "netavark"\n'; fi
  } > "$PE_WORK/containers.conf"
  echo "${detected[*]:-}" > "$PE_WORK/detected"

  rm -f "$PE_WORK/holder.ready"
  # The holder only keeps the namespaces alive; conmon and the containers
  # live in them too. setsid: out of the caller's process group. The store
  # is a tmpfs that exists only in the namespace (no fsync cost, nothing
  # left behind when it ends).
  PE_MARK=porthole-engine-holder CG="$cgroot" MOVE="$move" W="$PE_WORK" S="$PE_TMPFS_SIZE" \
  setsid unshare --mount --net --propagation private bash -c '
    set -e
    ip link set lo up
    if [ "$MOVE" = 1 ]; then
      mount --bind "$CG" "$W/cgmnt"
      umount -l /sys/fs/cgroup
      mount --move "$W/cgmnt" /sys/fs/cgroup
    fi
    mount -t tmpfs -o "size=$S,mode=0700" tmpfs "$W/store"
    touch "$W/holder.ready"
    exec sleep infinity' </dev/null >"$PE_WORK/holder.log" 2>&1 &
  echo $! > "$PE_WORK/holder.pid"
  local i
  for i in $(seq 100); do [ -e "$PE_WORK/holder.ready" ] && break; sleep 0.05; done
  holder_pid >/dev/null || { cat "$PE_WORK/holder.log" >&2; die "the namespace holder did not start"; }
  echo "engine.sh: podman $pv, workarounds: ${detected[*]:-none}" >&2
  cat "$PE_WORK/detected"
}

cmd_run() {
  local pid
  pid=$(holder_pid) || die "not up: run '$0 up' first"
  exec nsenter -t "$pid" -m -n --wd="$PWD" env \
    CONTAINERS_CONF="$PE_WORK/containers.conf" CONTAINERS_STORAGE_CONF="$PE_WORK/storage.conf" "$@"
}

cmd_down() {
  local pid cg2 i
  if pid=$(holder_pid); then
    # Everything is in the namespace's tmpfs, which goes with it; stopping
    # the containers first ends their processes (conmon is in the namespace).
    "$0" pm pod rm -a -f -t 0 >/dev/null 2>&1 || true
    "$0" pm rm -a -f -t 0 >/dev/null 2>&1 || true
    "$0" pm volume rm -a -f >/dev/null 2>&1 || true
    "$0" pm secret rm -a >/dev/null 2>&1 || true
    kill "$pid"
    for i in $(seq 100); do [ -e "/proc/$pid" ] || break; sleep 0.05; done
  fi
  rm -f "$PE_WORK/holder.pid" "$PE_WORK/holder.ready"
  # with the namespace gone, its tmpfs store is gone: only our files are left
  if ! grep -q " $PE_WORK/store " /proc/self/mounts; then
    rm -rf "$PE_WORK/store" "$PE_WORK/cgmnt"
  fi
  cg2=$(cgroup2_root)
  if [ -n "$cg2" ] && [ "$cg2" != /sys/fs/cgroup ] && [ -d "$cg2/$PE_CGROUP" ]; then
    find "$cg2/$PE_CGROUP" -depth -type d -exec rmdir {} \; 2>/dev/null || true
    [ ! -d "$cg2/$PE_CGROUP" ] || die "$cg2/$PE_CGROUP still has processes"
  fi
  if [ -s "$PE_WORK/enabled-controller" ] && [ -n "$cg2" ]; then
    # fails (busy) while another cgroup uses it: then it stays
    echo "-$(cat "$PE_WORK/enabled-controller")" > "$cg2/cgroup.subtree_control" 2>/dev/null || true
    rm -f "$PE_WORK/enabled-controller"
  fi
  rm -f "$PE_WORK"/{containers.conf,storage.conf,detected,holder.log}
  rmdir "$PE_WORK" 2>/dev/null || true
}

# A Debian minbase root (glibc, bash, coreutils) as a tarball for `podman
# import`, made once with debootstrap from the apt sources' mirror and kept
# in $PE_CACHE.
cmd_debian_rootfs() {
  local tar="$PE_CACHE/debian-$PE_SUITE-minbase.tar" mirror root
  if [ -s "$tar" ]; then echo "$tar"; return 0; fi
  command -v debootstrap >/dev/null || die "debootstrap is not installed: run '$0 install'"
  mirror=$(grep -rhoE '^(deb |URIs:) *(\[[^]]*\] *)?https?://[^ ]+' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null |
    grep -oE 'https?://[^ ]+' | grep -E '/debian/?$' | head -1 || true)
  [ -n "$mirror" ] || mirror=http://deb.debian.org/debian
  mkdir -p "$PE_CACHE"
  root=$(mktemp -d "$PE_CACHE/rootfs.XXXXXX")
  # expanded now: $root is local, gone when the trap runs at exit
  trap "rm -rf '$root' '$root.log' '$tar.tmp'" EXIT
  echo "engine.sh: debootstrap --variant=minbase $PE_SUITE from $mirror (once; cached in $tar)" >&2
  debootstrap --variant=minbase "$PE_SUITE" "$root" "$mirror" >"$root.log" 2>&1 ||
    { tail -20 "$root.log" >&2; rm -f "$root.log"; die "debootstrap failed"; }
  rm -f "$root.log"
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  tar -C "$root" --numeric-owner -cf "$tar.tmp" .
  mv "$tar.tmp" "$tar"
  rm -rf "$root"
  echo "$tar"
}

case "${1:-}" in
  install) cmd_install ;;
  up) cmd_up ;;
  pm) shift; cmd_run podman "$@" ;;
  run) shift; cmd_run "$@" ;;
  down) cmd_down ;;
  debian-rootfs) cmd_debian_rootfs ;;
  *) die "usage: engine.sh install|up|pm ARGS|run CMD|debian-rootfs|down" ;;
esac
