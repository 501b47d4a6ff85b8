#!/usr/bin/env bash
# End-to-end run of Vectis on a kind cluster (make e2e-kind).
#
#   1. create the kind cluster from kind-config.yaml (1 control plane, 3 workers)
#   2. build the image and `kind load docker-image` it
#   3. deploy etcd (3 members) and PostgreSQL into namespace vectis-deps
#   4. helm install charts/vectis with charts/vectis/ci/e2e-values.yaml
#   5. wait for exactly one leader, run `helm test` (send, receive back, compare)
#   6. run the Go e2e suite against the cluster
#   7. delete the cluster, unless KEEP=1
#
# Needs docker (a running engine), kind, kubectl, helm and go. Environment:
#   KEEP=1                keep the cluster afterwards (also kept on failure if KEEP=1)
#   KIND_CLUSTER=name     cluster name (default vectis-e2e)
#   IMAGE=vectis:e2e      image tag; must match the e2e values (image.repository:image.tag)
#   E2E_RUN=regexp        go test -run filter for the e2e suite (default: every test)
#   E2E_TIMEOUT=30m       go test -timeout
#   ARTIFACTS=dir         where diagnostics go on failure (default ./e2e-kind-artifacts)
set -euo pipefail

cd "$(dirname "$0")/../.."
root=$(pwd)

KIND_CLUSTER=${KIND_CLUSTER:-vectis-e2e}
IMAGE=${IMAGE:-vectis:e2e}
E2E_RUN=${E2E_RUN:-.}
E2E_TIMEOUT=${E2E_TIMEOUT:-30m}
ARTIFACTS=${ARTIFACTS:-$root/e2e-kind-artifacts}
KEEP=${KEEP:-0}
NS=vectis
DEPS_NS=vectis-deps
RELEASE=vectis
SHARED=/tmp/vectis-kind-shared   # kind-config.yaml extraMounts hostPath
CTX="kind-$KIND_CLUSTER"

log() { printf '\n== %s\n' "$*" >&2; }
die() { printf 'e2e-kind: %s\n' "$*" >&2; exit 1; }

for tool in docker kind kubectl helm go; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is not installed (needed: docker, kind, kubectl, helm, go)"
done
docker info >/dev/null 2>&1 || die "no Docker engine reachable (docker info failed); kind needs one"

kc() { kubectl --context "$CTX" "$@"; }

created=0
cleanup() {
  rc=$?
  if [ "$rc" != 0 ] && [ "$created" = 1 ]; then
    log "failed (exit $rc): collecting diagnostics in $ARTIFACTS"
    mkdir -p "$ARTIFACTS"
    kc get pods -A -o wide --show-labels >"$ARTIFACTS/pods.txt" 2>&1 || true
    kc get events -A --sort-by=.lastTimestamp >"$ARTIFACTS/events.txt" 2>&1 || true
    kc -n "$NS" describe pods >"$ARTIFACTS/describe-vectis.txt" 2>&1 || true
    kc -n "$DEPS_NS" describe pods >"$ARTIFACTS/describe-deps.txt" 2>&1 || true
    for p in $(kc -n "$NS" get pods -o name 2>/dev/null); do
      kc -n "$NS" logs --all-containers --prefix "$p" >"$ARTIFACTS/$(basename "$p").log" 2>&1 || true
    done
    kc -n "$NS" get endpointslices -o yaml >"$ARTIFACTS/endpointslices.yaml" 2>&1 || true
  fi
  if [ "$created" = 1 ] && [ "$KEEP" != 1 ]; then
    log "deleting kind cluster $KIND_CLUSTER (KEEP=1 keeps it)"
    kind delete cluster --name "$KIND_CLUSTER" || true
  elif [ "$created" = 1 ]; then
    log "KEEP=1: cluster $KIND_CLUSTER kept (kubectl --context $CTX ...; kind delete cluster --name $KIND_CLUSTER)"
  fi
  exit "$rc"
}
trap cleanup EXIT

log "kind cluster $KIND_CLUSTER"
mkdir -p "$SHARED/data"
# Vectis runs as 65532; the hostPath PV is not chowned by fsGroup.
chmod 0777 "$SHARED" "$SHARED/data"
if ! kind get clusters 2>/dev/null | grep -qx "$KIND_CLUSTER"; then
  kind create cluster --name "$KIND_CLUSTER" --config kind-config.yaml --wait 120s
fi
created=1

log "image $IMAGE"
docker build \
  --build-arg VERSION="$(git describe --tags --always --dirty 2>/dev/null || echo e2e)" \
  --build-arg REVISION="$(git rev-parse HEAD 2>/dev/null || echo unknown)" \
  --build-arg CREATED="$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
  -t "$IMAGE" .
kind load docker-image "$IMAGE" --name "$KIND_CLUSTER"

log "etcd and PostgreSQL in $DEPS_NS"
kc create namespace "$DEPS_NS" --dry-run=client -o yaml | kc apply -f -
kc apply -f deploy/kind/etcd.yaml -f deploy/kind/postgresql.yaml
kc apply -f deploy/kind/shared-pv.yaml
kc -n "$DEPS_NS" rollout status statefulset/etcd --timeout=180s
kc -n "$DEPS_NS" rollout status statefulset/postgresql --timeout=180s

log "helm install $RELEASE"
helm --kube-context "$CTX" upgrade --install "$RELEASE" charts/vectis \
  --namespace "$NS" --create-namespace \
  --values charts/vectis/ci/e2e-values.yaml \
  --set image.repository="${IMAGE%:*}" --set image.tag="${IMAGE##*:}" \
  --wait --timeout 5m

log "waiting for exactly one leader"
leader=""
for _ in $(seq 1 60); do
  leaders=$(kc -n "$NS" get pods -l app=vectis-server,vectis-leader=true -o name | wc -l)
  if [ "$leaders" = 1 ]; then
    leader=$(kc -n "$NS" get pods -l app=vectis-server,vectis-leader=true -o name)
    break
  fi
  sleep 2
done
[ -n "$leader" ] || die "no single leader after 120 s ($leaders pods labelled)"
echo "leader: $leader"
kc -n "$DEPS_NS" exec etcd-0 -- etcdctl get --prefix /vectis/vectis-e2e/election/ \
  --sort-by=CREATE --order=ASCEND --limit=1 --print-value-only

log "helm test (send, receive back, compare SHA-256)"
helm --kube-context "$CTX" test "$RELEASE" --namespace "$NS" --logs --timeout 5m

log "e2e suite (go test -tags e2e -run $E2E_RUN ./e2e/...)"
# The suite picks its kind backend from these variables; the addresses are
# the host ports kind-config.yaml maps to the NodePorts of the e2e values.
VECTIS_E2E_BACKEND=kind \
VECTIS_E2E_KIND=1 \
VECTIS_E2E_ARTIFACTS="$ARTIFACTS" \
VECTIS_E2E_KUBECONTEXT="$CTX" \
VECTIS_E2E_NAMESPACE="$NS" \
VECTIS_E2E_RELEASE="$RELEASE" \
VECTIS_E2E_DEPS_NAMESPACE="$DEPS_NS" \
VECTIS_E2E_PESIT_ADDR=127.0.0.1:5000 \
VECTIS_E2E_PESIT_TLS_ADDR=127.0.0.1:5001 \
VECTIS_E2E_API_ADDR=127.0.0.1:8080 \
VECTIS_E2E_CLUSTER_NAME=vectis-e2e \
  go test -tags e2e -count=1 -timeout "$E2E_TIMEOUT" -v -run "$E2E_RUN" ./e2e/...

log "e2e-kind passed"
