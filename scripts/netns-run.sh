#!/usr/bin/env bash
# Runs a command inside a private network namespace so that browser and WebRTC traffic
# never leaves the machine: loopback up, plus a veth pair whose end holds 198.18.0.1/24
# (a benchmarking range, RFC 2544) as the default route. ICE then finds a host candidate
# without flags, and Chromium's mDNS multicast and outside lookups go nowhere.
#
# Usage: scripts/netns-run.sh <command> [args...]
# Needs root (or CAP_SYS_ADMIN + CAP_NET_ADMIN). Already inside? Runs the command as is.
set -euo pipefail
if [ "$#" -eq 0 ]; then
  echo "usage: $0 <command> [args...]" >&2
  exit 2
fi
if [ "${MESHKV_NETNS:-}" = "1" ]; then
  exec "$@"
fi
if [ "$(id -u)" != "0" ]; then
  echo "netns-run: needs root to create a network namespace (unshare -n)" >&2
  exit 2
fi
export MESHKV_NETNS=1
exec unshare --net -- bash -c '
  set -e
  ip link set lo up
  ip link add mk0 type veth peer name mk1
  ip addr add 198.18.0.1/24 dev mk0
  ip link set mk0 up
  ip link set mk1 up
  ip route add default via 198.18.0.1 dev mk0
  exec "$@"
' netns-run "$@"
