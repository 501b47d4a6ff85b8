#!/usr/bin/env bash
# pod-network.sh CLUSTER: the pod network of a kind cluster created with
# disableDefaultCNI (kind-config.yaml), in place of kindnetd, whose image
# cannot be built from the Go module proxy. Like kindnetd, every node gets a
# ptp + host-local CNI config on its own podCIDR (from the Node object), and a
# route to every other node's podCIDR through that node's IP; the nodes share
# one Docker network, so the routes are all that pod-to-pod traffic needs.
# Run it again after a node is added or restarted.
#
# With --host-routes it also routes each podCIDR from this host through its
# node, so that a test process here reaches every pod on its own IP (the e2e
# monitor probes pods so); --delete-host-routes removes those routes again.
set -euo pipefail
usage() { echo "usage: $0 [--host-routes|--delete-host-routes] CLUSTER" >&2; exit 2; }
mode=nodes
case "${1:-}" in
  --host-routes) mode=host; shift ;;
  --delete-host-routes) mode=delete; shift ;;
esac
[ $# -eq 1 ] || usage
cluster=$1
kc() { kubectl --context "kind-$cluster" "$@"; }

# name podCIDR internalIP, one node a line; a node's podCIDR is set by the
# controller-manager shortly after it registers.
for _ in $(seq 60); do
  nodes=$(kc get nodes -o jsonpath='{range .items[*]}{.metadata.name} {.spec.podCIDR} {.status.addresses[?(@.type=="InternalIP")].address}{"\n"}{end}')
  [ -n "$nodes" ] && ! awk 'NF < 3 { bad = 1 } END { exit !bad }' <<<"$nodes" && break
  sleep 1
done
awk 'NF < 3 { bad = 1 } END { exit bad }' <<<"$nodes" || { echo "pod-network: nodes without a podCIDR or IP:" >&2; echo "$nodes" >&2; exit 1; }

if [ "$mode" != nodes ]; then
  while read -r name cidr ip; do
    if [ "$mode" = host ]; then
      ip route replace "$cidr" via "$ip"
      echo "pod-network: host route $cidr via $ip ($name)"
    else
      ip route del "$cidr" via "$ip" 2>/dev/null || true
    fi
  done <<<"$nodes"
  exit 0
fi

while read -r name cidr _; do
  conf=$(cat <<JSON
{
  "cniVersion": "1.0.0",
  "name": "vectis-kind",
  "plugins": [
    {
      "type": "ptp",
      "ipMasq": false,
      "ipam": {
        "type": "host-local",
        "ranges": [[{ "subnet": "$cidr" }]],
        "routes": [{ "dst": "0.0.0.0/0" }]
      },
      "mtu": 1500
    },
    { "type": "portmap", "capabilities": { "portMappings": true } }
  ]
}
JSON
)
  docker exec -i "$name" sh -c 'mkdir -p /etc/cni/net.d && cat > /etc/cni/net.d/10-vectis-kind.conflist.tmp && mv /etc/cni/net.d/10-vectis-kind.conflist.tmp /etc/cni/net.d/10-vectis-kind.conflist' <<<"$conf"
  while read -r other ocidr oip; do
    [ "$other" = "$name" ] && continue
    docker exec "$name" ip route replace "$ocidr" via "$oip"
  done <<<"$nodes"
  echo "pod-network: $name $cidr"
done <<<"$nodes"
