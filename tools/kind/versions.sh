# Versions of the offline kind build (sourced by tools/kind/*.sh and
# deploy/kind/e2e-kind.sh). Each one is what the Go module proxy and the
# Debian mirror serve; see tools/kind/README.md for why some differ from
# what kind v0.32.0 pins upstream.
KIND_VERSION=v0.32.0
K8S_VERSION=v1.36.3          # same as tools/kube (k8s.io/kubernetes) and its v0.36.3 staging replaces
COREDNS_VERSION=v1.14.2      # kubeadm v1.36 constants.CoreDNSVersion
CRICTL_VERSION=v1.37.0       # kind pins v1.36.0, which the proxy does not list
LPP_VERSION=v0.0.30          # kind pins v0.0.34, which the proxy refuses
PAUSE_VERSION=3.10.2
KUBEADM_ETCD_TAG=3.6.8-0     # the etcd image name kubeadm v1.36.3 asks for; it runs etcd v3.6.16
DEBIAN_SUITE=trixie          # kind v0.32.0's base is debian:trixie-slim
NODE_IMAGE=${NODE_IMAGE:-vectis-kind/node:$K8S_VERSION}
