#!/usr/bin/env bash
# node-image.sh [STEP...]: builds, with no container registry, everything that
# `make e2e-kind` runs on: the kind CLI, a kind node image for Kubernetes
# v1.36.3 with its control-plane images preloaded, and the images of the
# services the suite deploys (etcd, PostgreSQL). Everything comes from what an
# air-gapped site can mirror: the Go module proxy, a Debian mirror, gcc.
#
#   steps: bins rootfs images node   (default: all; each is skipped when its
#          output exists, so a second run costs seconds)
#
# Outputs (docker images):
#   $NODE_IMAGE                      kind node (kindest/node equivalent)
#   vectis-e2e/etcd:v3.6.16          etcd for the Vectis cluster
#   vectis-e2e/postgresql:trixie     PostgreSQL for the Vectis store
# and binaries in $KIND_CACHE/bin (kind, kubectl, ...).
#
# Env: KIND_CACHE (default <repo>/.tools/kind), TOOLS_BIN (default
# <repo>/.tools/bin, where tools/build.sh puts etcd), DEBIAN_MIRROR,
# FORCE=1 rebuilds every step.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=tools/kind/versions.sh
. "$ROOT/tools/kind/versions.sh"

KIND_CACHE=${KIND_CACHE:-$ROOT/.tools/kind}
TOOLS_BIN=${TOOLS_BIN:-${VECTIS_TOOLS_BIN:-$ROOT/.tools/bin}}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
FORCE=${FORCE:-0}
B=$KIND_CACHE/bin
mkdir -p "$B" "$KIND_CACHE/src" "$KIND_CACHE/rootfs" "$KIND_CACHE/out"

# The main module's GOFLAGS and go.work must not leak into these builds.
export GOWORK=off CGO_ENABLED=0

timed() { local s=$SECONDS; echo ">>> $*"; "$@"; echo "<<< $1: $((SECONDS - s))s"; }
have_image() { [ "$FORCE" != 1 ] && docker image inspect "$1" >/dev/null 2>&1; }

# ---- bins: Go programs, from the module proxy --------------------------------
step_bins() {
  local d
  if [ "$FORCE" = 1 ] || [ ! -x "$B/kind" ]; then
    GOBIN=$B GOFLAGS=-buildvcs=false go install -trimpath -ldflags '-s -w' "sigs.k8s.io/kind@$KIND_VERSION"
  fi
  # Kubernetes: tools/kube already maps every staging module of
  # k8s.io/kubernetes to its published twin; build from a copy of that module
  # so that the compiled packages are shared with `make tools` through the Go
  # build cache, and the extra commands add go.sum lines to the copy only.
  local kube="kubeadm kubelet kubectl kube-proxy kube-scheduler kube-controller-manager kube-apiserver" missing=0 c
  for c in $kube; do [ -x "$B/$c" ] || missing=1; done
  if [ "$FORCE" = 1 ] || [ $missing = 1 ]; then
    d=$KIND_CACHE/src/kube
    mkdir -p "$d"
    cp "$ROOT/tools/kube/go.mod" "$ROOT/tools/kube/go.sum" "$d/"
    local minor=${K8S_VERSION#v1.}; minor=${minor%%.*} pkgs=()
    for c in $kube; do pkgs+=("k8s.io/kubernetes/cmd/$c"); done
    (cd "$d" && GOFLAGS="-buildvcs=false -mod=mod" go build -trimpath \
      -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean" \
      -o "$B/" "${pkgs[@]}")
  fi
  "$B/kubeadm" version -o short | grep -qx "$K8S_VERSION" || { echo "kubeadm is not $K8S_VERSION" >&2; return 1; }
  local pair
  for pair in crictl=sigs.k8s.io/cri-tools/cmd/crictl@$CRICTL_VERSION \
              local-path-provisioner=github.com/rancher/local-path-provisioner@$LPP_VERSION \
              coredns=github.com/coredns/coredns@$COREDNS_VERSION; do
    if [ "$FORCE" = 1 ] || [ ! -x "$B/${pair%%=*}" ]; then
      GOBIN=$B GOFLAGS=-buildvcs=false go install -trimpath -ldflags '-s -w' "${pair#*=}"
    fi
  done
  # etcd (control plane and the Vectis cluster): the same v3.6.16 build as
  # the local e2e suite, from tools/.
  [ -x "$TOOLS_BIN/etcd" ] || "$ROOT/tools/build.sh" "$TOOLS_BIN"
  cp -f "$TOOLS_BIN/etcd" "$TOOLS_BIN/etcdctl" "$B/"
  # pause: static C from the kubernetes module source, as upstream builds it.
  if [ "$FORCE" = 1 ] || [ ! -x "$B/pause" ]; then
    local ks
    ks=$(cd "$KIND_CACHE/src/kube" 2>/dev/null && go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | jq -r .Dir) ||
      ks=$(GOFLAGS=-mod=mod go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | jq -r .Dir)
    gcc -Os -Wall -Werror -static -DVERSION="$PAUSE_VERSION" -o "$B/pause" "$ks/build/pause/linux/pause.c"
    strip "$B/pause"
  fi
}

# ---- rootfs: two Debian trees, from the Debian mirror -------------------------
# node: kind's base package list (images/base/Dockerfile of kind, minus
#   nfs/iscsi), with Debian's containerd, runc and CNI plugins in place of
#   kind's own builds of them.
# img: one small base for every other image: the control-plane components
#   (kube-proxy needs iptables, nft, conntrack), etcd, PostgreSQL (uid 999, as
#   the official image), and a shell for `helm test`.
step_rootfs() {
  local R=$KIND_CACHE/rootfs
  if [ "$FORCE" != 1 ] && [ -f "$R/node.done" ] && [ -f "$R/img.done" ]; then echo "rootfs: cached"; return; fi
  command -v debootstrap >/dev/null || { echo "rootfs: needs debootstrap (apt-get install debootstrap)" >&2; return 1; }
  rm -rf "$R/node" "$R/img" "$R"/*.done
  debootstrap --variant=minbase \
    --include=systemd,systemd-sysv,conntrack,iptables,nftables,iproute2,ethtool,util-linux,mount,kmod,libseccomp2,pigz,fuse-overlayfs,bash,ca-certificates,curl,jq,procps \
    "$DEBIAN_SUITE" "$R/node" "$DEBIAN_MIRROR" >"$R/node.log" 2>&1 &
  local p1=$!
  debootstrap --variant=minbase --include=iptables,nftables,conntrack,ca-certificates,procps \
    "$DEBIAN_SUITE" "$R/img" "$DEBIAN_MIRROR" >"$R/img.log" 2>&1 &
  local p2=$!
  wait $p1 || { tail -20 "$R/node.log" >&2; return 1; }
  wait $p2 || { tail -20 "$R/img.log" >&2; return 1; }
  local r
  for r in "$R/node" "$R/img"; do
    printf '#!/bin/sh\nexit 101\n' >"$r/usr/sbin/policy-rc.d" && chmod +x "$r/usr/sbin/policy-rc.d"
    chroot "$r" apt-get update -qq
  done
  DEBIAN_FRONTEND=noninteractive chroot "$R/node" apt-get install -y -qq --no-install-recommends \
    containerd runc containernetworking-plugins >/dev/null
  # PostgreSQL as uid/gid 999 (deploy/kind/postgresql.yaml runs it so), and
  # no cluster created by the package: the entrypoint makes one at start.
  chroot "$R/img" groupadd -r -g 999 postgres
  chroot "$R/img" useradd -r -u 999 -g 999 -d /var/lib/postgresql -s /bin/sh postgres
  mkdir -p "$R/img/etc/postgresql-common"
  echo 'create_main_cluster = false' >"$R/img/etc/postgresql-common/createcluster.conf"
  DEBIAN_FRONTEND=noninteractive chroot "$R/img" apt-get install -y -qq --no-install-recommends postgresql >/dev/null
  for r in "$R/node" "$R/img"; do
    rm -f "$r/usr/sbin/policy-rc.d"
    chroot "$r" apt-get clean
    rm -rf "$r"/var/lib/apt/lists/* "$r"/var/cache/apt/* "$r"/var/log/* "$r"/usr/share/doc/* \
      "$r"/usr/share/man/* "$r"/usr/share/info/* "$r"/tmp/*
  done
  touch "$R/node.done" "$R/img.done"
}

# ---- images: the component images, tagged as kubeadm and kind ask ---------
# Each is a static binary on the Debian img base; they are saved into
# out/control-plane.tar for the node image and the others stay in docker
# for `kind load docker-image`.
IMG_BASE=vectis-kind/base:$DEBIAN_SUITE
NODE_BASE=vectis-kind/node-base:$DEBIAN_SUITE
ETCD_IMAGE=vectis-e2e/etcd:v3.6.16
PG_IMAGE=vectis-e2e/postgresql:$DEBIAN_SUITE
SHELL_IMAGE=vectis-e2e/shell:$DEBIAN_SUITE

# img TAG DOCKERFILE-LINES...: a classic build in a context holding $B (FROM
# a local image only, so no registry is asked).
img() {
  local tag=$1 ctx; shift
  ctx=$(mktemp -d "$KIND_CACHE/out/ctx.XXXXXX")
  printf '%s\n' "$@" >"$ctx/Dockerfile"
  local f
  for f in $(sed -n 's/^COPY \([^ ]*\) .*/\1/p' "$ctx/Dockerfile"); do cp -a "$KIND_CACHE/out/files/$f" "$ctx/$f"; done
  # The classic builder warns that it is deprecated on every run: show its
  # output only when it fails.
  local out
  out=$(DOCKER_BUILDKIT=0 docker build -q -t "$tag" "$ctx" 2>&1) || { echo "$out" >&2; rm -rf "$ctx"; return 1; }
  rm -rf "$ctx"
  echo "image $tag"
}

# kind's node-image manifests (default storage: local-path-provisioner) and
# base-image files, from the kind module zip.
kind_files() {
  local kd f
  kd=$(cd "$KIND_CACHE/src" && GOFLAGS=-mod=mod go mod download -json "sigs.k8s.io/kind@$KIND_VERSION" | jq -r .Dir)
  rm -rf "$KIND_CACHE/src/kind-files" && mkdir -p "$KIND_CACHE/src/kind-files/gen"
  cp -r "$kd/images/base/files" "$KIND_CACHE/src/kind-files/base" && chmod -R u+w "$KIND_CACHE/src/kind-files"
  sed 's/^package nodeimage/package main/' "$kd/pkg/build/nodeimage/const_storage.go" >"$KIND_CACHE/src/kind-files/gen/storage.go"
  cat >"$KIND_CACHE/src/kind-files/gen/main.go" <<'GO'
package main

import "os"

func main() {
	if err := os.WriteFile(os.Args[1], []byte(defaultStorageManifest), 0o644); err != nil {
		panic(err)
	}
}
GO
  printf 'module gen\n\ngo 1.22\n' >"$KIND_CACHE/src/kind-files/gen/go.mod"
  (cd "$KIND_CACHE/src/kind-files/gen" && go run . "$KIND_CACHE/out/default-storage.yaml")
}

step_images() {
  local R=$KIND_CACHE/rootfs
  if have_image "$NODE_BASE" && have_image "$ETCD_IMAGE" && have_image "$PG_IMAGE" && have_image "$SHELL_IMAGE" &&
     [ -s "$KIND_CACHE/out/control-plane.tar" ] && [ "$FORCE" != 1 ]; then
    echo "images: cached"; return
  fi
  kind_files
  # kube-proxy runs on the host network of a node whose iptables mode (legacy
  # or nft) kind's entrypoint picked from the host's rules: pick the same on
  # first use, as the upstream images' iptables-wrapper does.
  cat >"$R/img/usr/sbin/iptables-wrapper" <<'WRAP'
#!/bin/sh
num_legacy=$( (iptables-legacy-save || true; ip6tables-legacy-save || true) 2>/dev/null | grep -c '^-' || true)
num_nft=$( (timeout 5 sh -c "iptables-nft-save; ip6tables-nft-save" || true) 2>/dev/null | grep -c '^-' || true)
if [ "$num_legacy" -ge "$num_nft" ]; then mode=legacy; else mode=nft; fi
update-alternatives --set iptables /usr/sbin/iptables-$mode >/dev/null
update-alternatives --set ip6tables /usr/sbin/ip6tables-$mode >/dev/null
exec "$0" "$@"
WRAP
  chmod 0755 "$R/img/usr/sbin/iptables-wrapper"
  local l
  for l in iptables iptables-save iptables-restore ip6tables ip6tables-save ip6tables-restore; do
    ln -sf /usr/sbin/iptables-wrapper "$R/img/etc/alternatives/$l"
  done
  tar -C "$R/img" --numeric-owner -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' - "$IMG_BASE" >/dev/null
  local F=$KIND_CACHE/out/files c
  rm -rf "$F" && mkdir -p "$F"
  cp -a "$B"/kube-apiserver "$B"/kube-controller-manager "$B"/kube-scheduler "$B"/kube-proxy "$B"/etcd "$B"/etcdctl \
    "$B"/coredns "$B"/local-path-provisioner "$B"/pause "$F/"
  cp -a "$ROOT/tools/kind/postgres-entrypoint.sh" "$F/"
  for c in kube-apiserver kube-controller-manager kube-scheduler kube-proxy; do
    img "registry.k8s.io/$c:$K8S_VERSION" "FROM $IMG_BASE" "COPY $c /usr/local/bin/$c" "ENTRYPOINT [\"/usr/local/bin/$c\"]"
  done
  img "registry.k8s.io/etcd:$KUBEADM_ETCD_TAG" "FROM $IMG_BASE" "COPY etcd /usr/local/bin/etcd" "COPY etcdctl /usr/local/bin/etcdctl" "CMD [\"/usr/local/bin/etcd\"]"
  img "registry.k8s.io/coredns/coredns:$COREDNS_VERSION" "FROM $IMG_BASE" "COPY coredns /coredns" "ENTRYPOINT [\"/coredns\"]"
  img "registry.k8s.io/pause:$PAUSE_VERSION" "FROM scratch" "COPY pause /pause" "ENTRYPOINT [\"/pause\"]"
  docker tag "registry.k8s.io/pause:$PAUSE_VERSION" registry.k8s.io/pause:3.10 # kind's containerd sandbox_image
  # local-path-provisioner and its helper, under the names kind's storage manifest uses.
  local lpp helper
  lpp=$(grep -o 'docker.io/kindest/local-path-provisioner:[^ "]*' "$KIND_CACHE/out/default-storage.yaml" | head -1)
  helper=$(grep -o 'docker.io/kindest/local-path-helper:[^ "]*' "$KIND_CACHE/out/default-storage.yaml" | head -1)
  img "$lpp" "FROM $IMG_BASE" "COPY local-path-provisioner /usr/local/bin/local-path-provisioner" "ENTRYPOINT [\"/usr/local/bin/local-path-provisioner\"]"
  img "$helper" "FROM $IMG_BASE"
  local cp_images=(registry.k8s.io/kube-apiserver:$K8S_VERSION registry.k8s.io/kube-controller-manager:$K8S_VERSION
    registry.k8s.io/kube-scheduler:$K8S_VERSION registry.k8s.io/kube-proxy:$K8S_VERSION
    registry.k8s.io/etcd:$KUBEADM_ETCD_TAG registry.k8s.io/coredns/coredns:$COREDNS_VERSION
    registry.k8s.io/pause:$PAUSE_VERSION registry.k8s.io/pause:3.10 "$lpp" "$helper")
  # Check the names against what kubeadm itself asks for.
  local want
  for want in $("$B/kubeadm" config images list --kubernetes-version "$K8S_VERSION" 2>/dev/null); do
    printf '%s\n' "${cp_images[@]}" | grep -qx "$want" || { echo "images: kubeadm wants $want, not built" >&2; return 1; }
  done
  docker save -o "$KIND_CACHE/out/control-plane.tar" "${cp_images[@]}"
  # Keep the shared daemon's list free of registry names.
  docker rmi "${cp_images[@]}" >/dev/null
  # The services the e2e suite deploys, and a shell for `helm test`.
  img "$ETCD_IMAGE" "FROM $IMG_BASE" "COPY etcd /usr/local/bin/etcd" "COPY etcdctl /usr/local/bin/etcdctl" "CMD [\"/usr/local/bin/etcd\"]"
  img "$PG_IMAGE" "FROM $IMG_BASE" "COPY postgres-entrypoint.sh /usr/local/bin/postgres-entrypoint.sh" \
    "ENV PATH=/usr/lib/postgresql/17/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
    "USER 999:999" "ENTRYPOINT [\"/usr/local/bin/postgres-entrypoint.sh\"]"
  docker tag "$IMG_BASE" "$SHELL_IMAGE"
  # The node's own base: kind's files over the Debian node tree.
  node_base
}

node_base() {
  local R=$KIND_CACHE/rootfs/node F=$KIND_CACHE/src/kind-files/base f
  install -d -m 0755 "$R/kind" "$R/kind/bin" "$R/etc/containerd" "$R/etc/default" "$R/etc/sysctl.d" \
    "$R/etc/systemd/system/kubelet.service.d" "$R/opt/cni/bin" "$R/etc/kubernetes/manifests"
  install -m 0755 "$F"/usr/local/bin/* "$R/usr/local/bin/"
  for f in "$F"/kind/*; do [ -f "$f" ] && install -m 0644 "$f" "$R/kind/"; done
  install -m 0755 "$F"/kind/bin/* "$R/kind/bin/"
  for f in "$F"/etc/*; do [ -f "$f" ] && install -m 0644 "$f" "$R/etc/"; done
  install -m 0644 "$F"/etc/containerd/* "$R/etc/containerd/"
  install -m 0644 "$F"/etc/default/* "$R/etc/default/"
  install -m 0644 "$F"/etc/sysctl.d/* "$R/etc/sysctl.d/"
  for f in "$F"/etc/systemd/system/*; do [ -f "$f" ] && install -m 0644 "$f" "$R/etc/systemd/system/"; done
  install -m 0644 "$F"/etc/systemd/system/kubelet.service.d/* "$R/etc/systemd/system/kubelet.service.d/"
  # As kind's base Dockerfile: no units that make no sense in a container.
  find "$R/lib/systemd/system/sysinit.target.wants/" -name systemd-tmpfiles-setup.service -delete
  rm -f "$R"/lib/systemd/system/multi-user.target.wants/* "$R"/etc/systemd/system/*.wants/* \
    "$R"/lib/systemd/system/local-fs.target.wants/* "$R"/lib/systemd/system/sockets.target.wants/*udev* \
    "$R"/lib/systemd/system/sockets.target.wants/*initctl* "$R"/lib/systemd/system/basic.target.wants/*
  grep -q '^ReadKMsg=no' "$R/etc/systemd/journald.conf" || echo ReadKMsg=no >>"$R/etc/systemd/journald.conf"
  ln -sf /usr/lib/systemd/systemd "$R/sbin/init"
  # Debian's package paths -> the paths kind's units and config use.
  for f in containerd ctr containerd-shim-runc-v2; do ln -sf /usr/bin/$f "$R/usr/local/bin/$f"; done
  ln -sf /usr/sbin/runc "$R/usr/local/sbin/runc"
  for f in bridge host-local loopback ptp portmap; do ln -sf /usr/lib/cni/$f "$R/opt/cni/bin/$f"; done
  install -m 0755 "$B/crictl" "$R/usr/local/bin/crictl"
  chroot "$R" systemctl enable kubelet.service containerd.service undo-mount-hacks.service >/dev/null 2>&1
  chroot "$R" systemctl mask systemd-binfmt.service >/dev/null 2>&1
  # Pods that ask for a negative oom_score_adj (system-node-critical ones)
  # fail in runc when the host's root lacks CAP_SYS_RESOURCE, as here; clamp
  # like kind does for rootless nodes. Harmless where the capability exists.
  sed -i 's/restrict_oom_score_adj = false/restrict_oom_score_adj = true/' "$R/etc/containerd/config.toml"
  grep -q 'restrict_oom_score_adj = true' "$R/etc/containerd/config.toml" ||
    { echo "node: kind's containerd config has no restrict_oom_score_adj to set" >&2; return 1; }
  chroot "$R" sh -c 'ctr oci spec | jq ".hooks.createContainer[.hooks.createContainer| length] |= . + {\"path\": \"/kind/bin/mount-product-files.sh\"}" | jq "del(.process.rlimits)" > /etc/containerd/cri-base.json'
  # docker import cannot set STOPSIGNAL; a classic build FROM the local import can.
  tar -C "$R" --numeric-owner -c . | docker import --change 'ENV container=docker' \
    --change 'ENTRYPOINT [ "/usr/local/bin/entrypoint", "/sbin/init" ]' - "$NODE_BASE-rootfs" >/dev/null
  img "$NODE_BASE" "FROM $NODE_BASE-rootfs" "STOPSIGNAL SIGRTMIN+3"
  docker rmi "$NODE_BASE-rootfs" >/dev/null
}

# ---- node: as kind's `build node-image`: binaries in, images preloaded -----
step_node() {
  if have_image "$NODE_IMAGE"; then echo "node: $NODE_IMAGE exists (FORCE=1 rebuilds)"; return; fi
  local c=vectis-kind-build-$$ b
  docker run -d --name "$c" --entrypoint=sleep --security-opt seccomp=unconfined "$NODE_BASE" infinity >/dev/null
  # shellcheck disable=SC2064
  trap "docker rm -f -v $c >/dev/null 2>&1 || true" RETURN
  for b in kubeadm kubelet kubectl; do
    docker cp "$B/$b" "$c:/usr/bin/$b"
    docker exec "$c" chown root:root "/usr/bin/$b"
  done
  printf %s "$K8S_VERSION" | docker exec -i "$c" sh -c 'cat > /kind/version'
  docker exec "$c" mkdir -p /kind/manifests
  docker cp "$KIND_CACHE/out/default-storage.yaml" "$c:/kind/manifests/default-storage.yaml"
  docker exec "$c" sh -c 'nohup containerd >/tmp/containerd.log 2>&1 &'
  docker exec "$c" sh -c 'for i in $(seq 50); do [ -S /run/containerd/containerd.sock ] && break; sleep 0.2; done; ctr version >/dev/null'
  docker exec -i "$c" ctr --namespace=k8s.io images import --label=io.cri-containerd.pinned=pinned \
    --all-platforms --no-unpack --digests - <"$KIND_CACHE/out/control-plane.tar" >/dev/null
  docker exec "$c" pkill containerd
  # PID 1 is sleep, which never reaps: containerd is gone once it is a zombie.
  docker exec "$c" sh -c 'while ps -o stat= -C containerd | grep -qv "^Z"; do sleep 0.2; done'
  docker exec "$c" rm -f /tmp/containerd.log
  docker commit --change 'ENTRYPOINT [ "/usr/local/bin/entrypoint", "/sbin/init" ]' \
    --change 'ENV HTTP_PROXY="" HTTPS_PROXY="" NO_PROXY=""' "$c" "$NODE_IMAGE" >/dev/null
  docker image ls "$NODE_IMAGE"
}

if [ $# -eq 0 ]; then
  # The Debian downloads (network, dpkg) overlap the Go builds (CPU).
  timed step_rootfs >"$KIND_CACHE/rootfs.log" 2>&1 &
  rootfs=$!
  timed step_bins
  wait $rootfs || { cat "$KIND_CACHE/rootfs.log" >&2; exit 1; }
  cat "$KIND_CACHE/rootfs.log"
  timed step_images
  timed step_node
else
  for s in "$@"; do timed "step_$s"; done
fi
