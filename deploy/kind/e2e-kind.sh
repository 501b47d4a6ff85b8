#!/usr/bin/env bash
# End-to-end run of Vectis on a kind cluster (make e2e-kind).
#
#   1. the images: Vectis (make image), and unless STOCK_IMAGES=1 the kind
#      node image, etcd, PostgreSQL and a shell image built with no registry
#      (tools/kind/node-image.sh, cached)
#   2. create the kind cluster from kind-config.yaml (1 control plane, 3
#      workers), give it its pod network (ptp CNI + routes), load the images
#   3. deploy etcd (3 members) and PostgreSQL into namespace vectis-deps
#   4. helm install charts/vectis with charts/vectis/ci/e2e-values.yaml
#   5. wait for exactly one leader, run `helm test` (send, receive back, compare)
#   6. run the Go e2e suite against the cluster
#   7. delete the cluster, unless KEEP=1
#
# Needs docker (a running engine) and go; kind and kubectl come from
# .tools/kind/bin, helm from .tools/bin (make tools). Environment:
#   KEEP=1                keep the cluster afterwards (also kept on failure if KEEP=1)
#   STOCK_IMAGES=1        use kind's stock node image and the public etcd,
#                         postgres and busybox images (needs registry access)
#   KIND_CLUSTER=name     cluster name (default vectis-e2e)
#   IMAGE=vectis:e2e      image tag; must match the e2e values (image.repository:image.tag)
#   E2E_RUN=regexp        go test -run filter for the e2e suite (default: TestKind,
#                         every scenario; e.g. 'TestKind/(install|rollout-restart)$')
#   E2E_TIMEOUT=30m       go test -timeout
#   ARTIFACTS=dir         where diagnostics go on failure (default ./e2e-kind-artifacts)
set -euo pipefail

cd "$(dirname "$0")/../.."
root=$(pwd)

KIND_CLUSTER=${KIND_CLUSTER:-vectis-e2e}
IMAGE=${IMAGE:-vectis:e2e}
E2E_RUN=${E2E_RUN:-TestKind}
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

. tools/kind/versions.sh
STOCK_IMAGES=${STOCK_IMAGES:-0}
KIND_CACHE=${KIND_CACHE:-$root/.tools/kind}
TOOLS_BIN=${VECTIS_TOOLS_BIN:-$root/.tools/bin}
export PATH=$KIND_CACHE/bin:$TOOLS_BIN:$PATH
t0=$SECONDS
timing() { printf '== TIMING %s: %ss\n' "$1" "$((SECONDS - t0))" >&2; t0=$SECONDS; }

for tool in docker go; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is not installed"
done
./tools/kind/docker-host.sh --start-only || die "no Docker engine reachable"
[ -x "$TOOLS_BIN/helm" ] || ./tools/build.sh "$TOOLS_BIN"

log "images"
make -s image IMAGE="$IMAGE"
# The image as a user without Kubernetes meets it: `version`, and `serve` on
# the embedded defaults, reachable through a published port.
docker run --rm "$IMAGE" version
smoke=vectis-e2e-smoke
docker rm -f "$smoke" >/dev/null 2>&1 || true
docker run -d --name "$smoke" -p 127.0.0.1::8080 -p 127.0.0.1::5000 "$IMAGE" serve >/dev/null
smoke_ok=0
for _ in $(seq 1 50); do
  api=$(docker port "$smoke" 8080/tcp 2>/dev/null | head -1)
  if [ -n "$api" ] && curl -fsS "http://$api/readyz" >/dev/null 2>&1; then smoke_ok=1; break; fi
  sleep 0.2
done
if [ "$smoke_ok" = 1 ]; then
  pesit=$(docker port "$smoke" 5000/tcp | head -1)
  # A PeSIT connection through the published port gets an answer (the node
  # has no partner yet, so it is a refusal, but one from Vectis).
  (exec 3<>"/dev/tcp/${pesit%:*}/${pesit##*:}") || smoke_ok=0
fi
[ "$smoke_ok" = 1 ] || { docker logs "$smoke" >&2 || true; docker rm -f "$smoke" >/dev/null; die "docker run $IMAGE serve: not ready through its published ports"; }
docker rm -f "$smoke" >/dev/null
echo "image $IMAGE: version and serve (embedded defaults) answer through published ports"
if [ "$STOCK_IMAGES" = 1 ]; then
  [ -x "$KIND_CACHE/bin/kind" ] || GOBIN=$KIND_CACHE/bin GOFLAGS=-buildvcs=false go install "sigs.k8s.io/kind@$KIND_VERSION"
  command -v kubectl >/dev/null || die "STOCK_IMAGES=1 needs kubectl in PATH"
  node_image=""                 # kind's default node image
  etcd_image=quay.io/coreos/etcd:v3.6.16
  pg_image=postgres:16
  shell_image=busybox:1.37
  for i in $etcd_image $pg_image $shell_image; do docker image inspect "$i" >/dev/null 2>&1 || docker pull -q "$i"; done
else
  ./tools/kind/node-image.sh
  node_image=$NODE_IMAGE
  etcd_image=vectis-e2e/etcd:v3.6.16
  pg_image=vectis-e2e/postgresql:$DEBIAN_SUITE
  shell_image=vectis-e2e/shell:$DEBIAN_SUITE
fi
# kind runs its nodes --privileged; where this host cannot, a runtime
# wrapper is put in front of docker for kind (printed dir, else nothing).
shim=$(CHECK_IMAGE=$shell_image ./tools/kind/docker-host.sh)
[ -z "$shim" ] || export PATH=$shim:$PATH
timing images

kc() { kubectl --context "$CTX" "$@"; }

created=0
host_routes=0
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
    [ "$host_routes" = 0 ] || ./deploy/kind/pod-network.sh --delete-host-routes "$KIND_CLUSTER" || true
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
  kind create cluster --name "$KIND_CLUSTER" --config kind-config.yaml ${node_image:+--image "$node_image"}
fi
created=1
timing "kind create cluster"

log "pod network"
./deploy/kind/pod-network.sh "$KIND_CLUSTER"
# The monitor probes every pod on its own IP from this host.
host_routes=1
./deploy/kind/pod-network.sh --host-routes "$KIND_CLUSTER"
# While the PeSIT Service has no endpoint (between a leader's loss and the
# next leader's label), kube-proxy REJECTs its NodePort with ICMP port
# unreachable, which the kernel rate-limits per peer: 6 at once, then one a
# second (net.ipv4.icmp_ratelimit=1000). Every probe of this suite comes from
# one address, the kind bridge, and polls every 20 ms, so after six refusals
# its SYNs went unanswered and each CONNECT waited out TCP's 1 s
# retransmission: the suite's own polling added up to a second to the
# failover it measured. A partner retrying at a human pace never meets the
# limit. Measured with tcpdump on the bridge; see docs/kubernetes.md.
for node in $(kind get nodes --name "$KIND_CLUSTER"); do
  docker exec "$node" sysctl -qw net.ipv4.icmp_ratelimit=0
done
kc wait --for=condition=Ready nodes --all --timeout=180s
kc -n kube-system wait --for=condition=Ready pods --all --timeout=180s
timing "pod network, nodes and system pods Ready"

log "loading images"
kind load docker-image --name "$KIND_CLUSTER" "$IMAGE" "$etcd_image" "$pg_image" "$shell_image"
timing "kind load"

log "etcd and PostgreSQL in $DEPS_NS"
kc create namespace "$DEPS_NS" --dry-run=client -o yaml | kc apply -f -
sed -e "s|image: quay.io/coreos/etcd:v3.6.16|image: $etcd_image|" deploy/kind/etcd.yaml | kc apply -f -
sed -e "s|image: postgres:16|image: $pg_image|" deploy/kind/postgresql.yaml | kc apply -f -
kc apply -f deploy/kind/shared-pv.yaml
kc -n "$DEPS_NS" rollout status statefulset/etcd --timeout=180s
kc -n "$DEPS_NS" rollout status statefulset/postgresql --timeout=180s

# The pods export their spans to a receiver that the e2e suite runs on this
# host, on its address on the kind network (the bridge's IPv4 gateway), so
# that the failover-span scenario reads them as it does locally.
kind_gateway=$(docker network inspect kind -f '{{range .IPAM.Config}}{{.Gateway}} {{end}}' |
  tr ' ' '\n' | grep -E '^[0-9]+(\.[0-9]+){3}$' | head -1 || true)
otlp_sets=()
OTLP_LISTEN=""
if [ -n "$kind_gateway" ]; then
  OTLP_LISTEN="$kind_gateway:4318"
  otlp_sets=(--set telemetry.otel.endpoint="http://$OTLP_LISTEN" --set telemetry.otel.protocol=http/protobuf
    --set-json 'extraEnv=[{"name":"OTEL_BSP_SCHEDULE_DELAY","value":"50"},{"name":"OTEL_EXPORTER_OTLP_INSECURE","value":"true"}]')
else
  echo "e2e-kind: no IPv4 gateway on the kind network; the failover-span scenario will be skipped" >&2
fi

log "helm install $RELEASE"
helm --kube-context "$CTX" upgrade --install "$RELEASE" charts/vectis \
  --namespace "$NS" --create-namespace \
  --values charts/vectis/ci/e2e-values.yaml \
  --set image.repository="${IMAGE%:*}" --set image.tag="${IMAGE##*:}" \
  --set tests.shellImage="$shell_image" \
  "${otlp_sets[@]}" \
  --wait --timeout 5m
timing "etcd, PostgreSQL, helm install"

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
# (No --logs: the chart deletes a test pod that succeeded, and helm then
# fails to fetch its logs; a failed one is kept and its logs shown.)
if ! helm --kube-context "$CTX" test "$RELEASE" --namespace "$NS" --timeout 5m; then
  kc -n "$NS" logs --all-containers --prefix "$RELEASE-test-transfer" || true
  die "helm test failed"
fi
timing "leader, helm test"

log "e2e suite (go test -tags e2e -run $E2E_RUN ./e2e)"
# The suite picks its kind backend from these variables; the addresses are
# the host ports kind-config.yaml maps to the NodePorts of the e2e values.
# Only ./e2e: ./e2e/hascenarios runs processes on a local control plane
# (make e2e runs it).
VECTIS_E2E_BACKEND=kind \
VECTIS_E2E_KIND=1 \
VECTIS_E2E_POD_ROUTES=1 \
VECTIS_E2E_ARTIFACTS="$ARTIFACTS" \
VECTIS_E2E_KUBECONTEXT="$CTX" \
VECTIS_E2E_NAMESPACE="$NS" \
VECTIS_E2E_RELEASE="$RELEASE" \
VECTIS_E2E_DEPS_NAMESPACE="$DEPS_NS" \
VECTIS_E2E_PESIT_ADDR=127.0.0.1:5000 \
VECTIS_E2E_PESIT_TLS_ADDR=127.0.0.1:5001 \
VECTIS_E2E_API_ADDR=127.0.0.1:8080 \
VECTIS_E2E_CLUSTER_NAME=vectis-e2e \
VECTIS_E2E_OTLP_HTTP_LISTEN="$OTLP_LISTEN" \
  go test -tags e2e -count=1 -timeout "$E2E_TIMEOUT" -v -run "$E2E_RUN" ./e2e

timing "e2e suite"
log "e2e-kind passed"
