#!/usr/bin/env bash
# docker-host.sh [--start-only]: makes this host able to run kind nodes, and
# prints the directory to put first on PATH for kind (empty when nothing is
# needed). --start-only does step 1 only.
#   1. start dockerd in the background (log: $DOCKERD_LOG) when none answers;
#   2. check that `docker run --privileged` works (kind runs every node so).
#      Where root lacks CAP_SYS_RESOURCE in its bounding set, some runc
#      versions fail it ("unable to apply caps: operation not permitted"):
#      only then register a runc wrapper that drops that capability as an
#      extra docker runtime (/etc/docker/daemon.json + SIGHUP, no restart),
#      and a docker CLI shim that makes kind's `docker run` use it.
# Needs a local image with /bin/true to probe (CHECK_IMAGE).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
KIND_CACHE=${KIND_CACHE:-$ROOT/.tools/kind}
DOCKERD_LOG=${DOCKERD_LOG:-/tmp/dockerd.log}
CHECK_IMAGE=${CHECK_IMAGE:-vectis-kind/base:trixie}
say() { echo "docker-host: $*" >&2; }

if ! docker info >/dev/null 2>&1; then
  command -v dockerd >/dev/null || { say "no dockerd: apt-get install docker.io"; exit 1; }
  say "starting dockerd (log: $DOCKERD_LOG)"
  nohup dockerd >"$DOCKERD_LOG" 2>&1 &
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
  docker info >/dev/null 2>&1 || { say "dockerd did not answer in 30 s; see $DOCKERD_LOG"; exit 1; }
fi

[ "${1:-}" != --start-only ] || exit 0

err=$(docker run --rm --privileged --entrypoint /bin/true "$CHECK_IMAGE" 2>&1) && { say "docker run --privileged works: no runtime wrapper needed"; exit 0; }
case "$err" in
  *"unable to apply caps"*) ;;
  *) say "docker run --privileged fails for another reason: $err"; exit 1 ;;
esac
say "docker run --privileged fails here (root lacks CAP_SYS_RESOURCE): using a runc wrapper runtime that drops it"
# The wrapper is a host runtime registered in dockerd's config, so it lives
# at a host path that outlives this checkout (CI and later clones reuse it).
wrapper=${VECTIS_KIND_RUNC:-/usr/local/libexec/vectis-kind-runc}
mkdir -p "$(dirname "$wrapper")" "$KIND_CACHE/shim"
cat >"$wrapper" <<'WRAP'
#!/bin/bash
# OCI runtime wrapper: drop CAP_SYS_RESOURCE from the container spec
# (create/run --bundle) and from exec process specs, then run the real runc.
F='def strip: if type=="object" then with_entries(.value |= (if type=="array" then map(select(. != "CAP_SYS_RESOURCE")) else . end)) else . end;'
fix() { local f=$1 expr=$2 tmp; [ -f "$f" ] || return 0; tmp=$(mktemp "$f.XXXXXX"); if jq "$F $expr" "$f" >"$tmp"; then cat "$tmp" >"$f"; fi; rm -f "$tmp"; }
args=("$@"); cmd="" bundle="" process=""
for ((i = 0; i < ${#args[@]}; i++)); do
  a=${args[$i]}
  case "$a" in
    create | run | exec) [ -z "$cmd" ] && cmd=$a ;;
    --bundle | -b) bundle=${args[$((i + 1))]} ;;
    --bundle=*) bundle=${a#--bundle=} ;;
    --process | -p) process=${args[$((i + 1))]} ;;
    --process=*) process=${a#--process=} ;;
  esac
done
case "$cmd" in
  create | run) [ -n "$bundle" ] && fix "$bundle/config.json" '.process.capabilities |= strip' ;;
  exec) [ -n "$process" ] && fix "$process" '.capabilities |= strip' ;;
esac
exec runc "$@"
WRAP
chmod 0755 "$wrapper"
cfg=/etc/docker/daemon.json
registered=$(jq -r '.runtimes["vectis-kind-runc"].path // empty' $cfg 2>/dev/null || true)
if [ "$registered" != "$wrapper" ] || ! docker info --format '{{json .Runtimes}}' | grep -q '"vectis-kind-runc"'; then
  mkdir -p /etc/docker
  [ -s $cfg ] || echo '{}' >$cfg
  jq --arg p "$wrapper" '.runtimes["vectis-kind-runc"] = {path: $p}' $cfg >$cfg.tmp && mv $cfg.tmp $cfg
  kill -HUP "$(pidof dockerd)"
  for _ in $(seq 20); do docker info --format '{{json .Runtimes}}' | grep -q '"vectis-kind-runc"' && break; sleep 0.5; done
fi
real=$(command -v docker)
cat >"$KIND_CACHE/shim/docker" <<SHIM
#!/bin/sh
# docker CLI shim for kind only: node containers use the vectis-kind-runc runtime.
if [ "\${1:-}" = run ]; then shift; exec $real run --runtime=vectis-kind-runc "\$@"; fi
exec $real "\$@"
SHIM
chmod 0755 "$KIND_CACHE/shim/docker"
"$KIND_CACHE/shim/docker" run --rm --privileged --entrypoint /bin/true "$CHECK_IMAGE" ||
  { say "still failing with the wrapper runtime"; exit 1; }
say "privileged containers work through vectis-kind-runc"
echo "$KIND_CACHE/shim"
