#!/usr/bin/env bash
# build.sh OUTDIR: builds the programs that the tests run against (etcd,
# etcdctl, kube-apiserver, kube-controller-manager, helm) from the Go module
# proxy into OUTDIR. Each group lives in its own module so that their
# dependency graphs never constrain each other or the main module:
#   tools/       etcd, etcdctl               (etcd v3.6.16)
#   tools/kube/  kube-apiserver, kube-controller-manager (k8s.io/kubernetes v1.36.x)
#   tools/helm/  helm                        (helm v3)
# A group is rebuilt only when its go.mod/go.sum, this script or the Go
# version changed, or one of its binaries is missing. Needs only Go (>= the
# `go` line of each go.mod, 1.26.0) and the module proxy.
set -euo pipefail

if [ $# -ne 1 ]; then
  echo "usage: $0 OUTDIR" >&2
  exit 2
fi
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$1"
out=$(cd "$1" && pwd)
GO=${GO:-go}

# The main module's GOFLAGS (e.g. -mod=vendor) must not leak in here.
export GOFLAGS=-buildvcs=false GOWORK=off
export CGO_ENABLED=0

stamp_of() { # stamp_of MODULE_DIR
  { cat "$1/go.mod" "$1/go.sum" "$here/build.sh"; "$GO" version; } | sha256sum | cut -d' ' -f1
}

# build GROUP MODULE_DIR "BIN=PACKAGE ..." [LDFLAGS]
build() {
  local group=$1 dir=$2 pairs=$3 ldflags=${4:-}
  local stampfile="$out/.stamp-$group" want have missing=0 pair
  want=$(stamp_of "$dir")
  have=$(cat "$stampfile" 2>/dev/null || true)
  for pair in $pairs; do
    [ -x "$out/${pair%%=*}" ] || missing=1
  done
  if [ "$want" = "$have" ] && [ $missing = 0 ]; then
    echo "tools: $group up to date ($(for p in $pairs; do printf '%s ' "${p%%=*}"; done| sed 's/ $//'))"
    return
  fi
  for pair in $pairs; do
    local bin=${pair%%=*} pkg=${pair#*=} start=$SECONDS
    echo "tools: building $bin from $pkg"
    (cd "$dir" && "$GO" build -trimpath -ldflags "-s -w $ldflags" -o "$out/$bin.tmp" "$pkg")
    mv -f "$out/$bin.tmp" "$out/$bin"
    echo "tools: built $out/$bin in $((SECONDS - start))s"
  done
  echo "$want" > "$stampfile"
}

build etcd "$here" "etcd=./etcd etcdctl=./etcdctl"
build kube "$here/kube" \
  "kube-apiserver=k8s.io/kubernetes/cmd/kube-apiserver kube-controller-manager=k8s.io/kubernetes/cmd/kube-controller-manager" \
  "-X k8s.io/component-base/version.gitVersion=$(cd "$here/kube" && "$GO" list -m -f '{{.Version}}' k8s.io/kubernetes) -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=36"
build helm "$here/helm" "helm=helm.sh/helm/v3/cmd/helm" \
  "-X helm.sh/helm/v3/internal/version.version=$(cd "$here/helm" && "$GO" list -m -f '{{.Version}}' helm.sh/helm/v3)"
