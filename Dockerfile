# syntax=docker/dockerfile:1
#
# Vectis container image: a static Go binary on distroless, non-root.
#   docker build --build-arg VERSION=$(git describe --tags --always --dirty) \
#     --build-arg REVISION=$(git rev-parse HEAD) \
#     --build-arg CREATED=$(date -u +%Y-%m-%dT%H:%M:%SZ) -t vectis:dev .
# (`make image` runs this with -t $(IMAGE).)

ARG GO_VERSION=1.26

# ---- build -----------------------------------------------------------------
FROM --platform=$BUILDPLATFORM golang:${GO_VERSION} AS build
WORKDIR /src

# Modules first: this layer is reused until go.mod or go.sum change.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod \
    go mod download

COPY . .
ARG TARGETOS TARGETARCH
ARG VERSION=dev
# CGO off: a static binary that runs on distroless/static (no libc). SQLite is
# modernc.org/sqlite, pure Go, so nothing is lost.
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=${TARGETOS} GOARCH=${TARGETARCH} \
    go build -trimpath -buildvcs=false \
      -ldflags "-s -w -X main.version=${VERSION}" \
      -o /out/vectis ./cmd/vectis \
 && mkdir -p /out/var/lib/vectis

# ---- runtime ---------------------------------------------------------------
# distroless static: CA certificates, tzdata, /etc/passwd with nonroot (65532),
# no shell and no package manager.
FROM gcr.io/distroless/static-debian12:nonroot

ARG VERSION=dev
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="vectis" \
      org.opencontainers.image.description="Vectis: a highly available PeSIT E file-transfer server and client" \
      org.opencontainers.image.url="https://github.com/vectis-ft/vectis" \
      org.opencontainers.image.source="https://github.com/vectis-ft/vectis" \
      org.opencontainers.image.documentation="https://github.com/vectis-ft/vectis/blob/main/docs/kubernetes.md" \
      org.opencontainers.image.vendor="Vectis" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.base.name="gcr.io/distroless/static-debian12:nonroot"

COPY --from=build /out/vectis /usr/local/bin/vectis
# The working and data directory, writable by the runtime user (without a
# config file, `vectis serve` keeps its SQLite store and files in ./data).
COPY --from=build --chown=65532:65532 /out/var/lib/vectis /var/lib/vectis

# 65532 is "nonroot" in distroless; numeric so that runAsNonRoot can verify it.
USER 65532:65532
WORKDIR /var/lib/vectis
VOLUME ["/var/lib/vectis"]

# 8080 admin API and /metrics (every pod); 5000 PeSIT and 5001 PeSIT over TLS
# (the leader only).
EXPOSE 8080 5000 5001

# `docker run IMAGE` starts a standalone node on the embedded defaults; the
# Helm chart runs `vectis serve --config /etc/vectis/vectis.yaml`, and
# `docker run IMAGE send ...` / `receive ...` use the client.
ENTRYPOINT ["/usr/local/bin/vectis"]
CMD ["serve"]
