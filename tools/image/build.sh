#!/usr/bin/env bash
# build.sh BINARY IMAGE VERSION: builds the Vectis image from a static binary
# with no registry. It prepares a build context holding the image's whole
# filesystem (the Dockerfile is FROM scratch), then runs the classic builder,
# which needs no registry for FROM scratch (BuildKit would still resolve its
# dockerfile frontend image from Docker Hub because of the syntax line, and
# is not always installed).
#
# CA certificates come from the build host (/etc/ssl/certs/ca-certificates.crt,
# Debian's ca-certificates; CA_BUNDLE overrides the path).
set -euo pipefail

if [ $# -ne 3 ]; then
  echo "usage: $0 BINARY IMAGE VERSION" >&2
  exit 2
fi
bin=$1 image=$2 version=$3
root=$(cd "$(dirname "$0")/../.." && pwd)
ca=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}

command -v docker >/dev/null || { echo "image: docker is not installed" >&2; exit 1; }
[ -s "$ca" ] || { echo "image: no CA bundle at $ca (install ca-certificates or set CA_BUNDLE)" >&2; exit 1; }
# A dynamically linked binary would not start on scratch: refuse it here
# rather than ship an image whose entrypoint fails with "no such file".
if command -v file >/dev/null && file "$bin" | grep -q 'dynamically linked'; then
  echo "image: $bin is dynamically linked; build it with CGO_ENABLED=0" >&2
  exit 1
fi

ctx=$(mktemp -d "${TMPDIR:-/tmp}/vectis-image.XXXXXX")
trap 'rm -rf "$ctx"' EXIT
r=$ctx/rootfs
install -d -m 0755 "$r/etc/ssl/certs" "$r/usr/local/bin" "$ctx/data"
install -d -m 1777 "$r/tmp"
install -m 0644 "$ca" "$r/etc/ssl/certs/ca-certificates.crt"
install -m 0755 "$bin" "$r/usr/local/bin/vectis"
# The distroless static nonroot user/group, so that tools and logs show names.
cat >"$r/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
PASSWD
cat >"$r/etc/group" <<'GROUP'
root:x:0:
nobody:x:65534:
nonroot:x:65532:
GROUP
chmod 0644 "$r/etc/passwd" "$r/etc/group"
cp "$root/Dockerfile" "$ctx/Dockerfile"

# The classic builder warns that it is deprecated on every run: show its
# output only when it fails.
if ! out=$(DOCKER_BUILDKIT=0 docker build --quiet \
  --build-arg VERSION="$version" \
  --build-arg REVISION="$(git -C "$root" rev-parse HEAD 2>/dev/null || echo unknown)" \
  --build-arg CREATED="$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
  -t "$image" "$ctx" 2>&1); then
  echo "$out" >&2
  exit 1
fi
docker image ls --format 'image: {{.Repository}}:{{.Tag}} {{.ID}} {{.Size}}' "$image"
