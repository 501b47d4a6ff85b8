# Vectis container image: the static binary on scratch, non-root (65532),
# with CA certificates and /etc/passwd, /etc/group: what distroless/static
# gives, assembled locally so that the image builds with no registry at all.
#
# Build it with `make image` (tools/image/build.sh): it builds the static
# binary and prepares the build context (rootfs/) that this file copies from,
# then runs `docker build -f Dockerfile <context>`. The repository root is not
# the build context: there is no remote FROM, hence no Go toolchain image.

FROM scratch

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
      org.opencontainers.image.base.name="scratch"

# etc/passwd, etc/group (root and nonroot 65532), etc/ssl/certs, tmp (1777)
# and usr/local/bin/vectis, owned by root.
COPY rootfs/ /
# The working and data directory, writable by the runtime user (without a
# config file, `vectis serve` keeps its SQLite store and files in ./data).
COPY --chown=65532:65532 data/ /var/lib/vectis/

# 65532 is "nonroot" as in distroless; numeric so that runAsNonRoot can verify it.
USER 65532:65532
WORKDIR /var/lib/vectis
VOLUME ["/var/lib/vectis"]
ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
# The binary binds port-only listen addresses to loopback by default (a
# server started by hand on a host exposes nothing it was not told to). In a
# container the network namespace is the boundary and `docker run -p` or a
# Service must reach the ports, so the image binds every interface.
ENV VECTIS_NODE_BINDADDRESS=0.0.0.0

# 8080 admin API and /metrics (every pod); 5000 PeSIT and 5001 PeSIT over TLS
# (the leader only).
EXPOSE 8080 5000 5001

# `docker run IMAGE` starts a standalone node on the embedded defaults; the
# Helm chart runs `vectis serve --config /etc/vectis/vectis.yaml`, and
# `docker run IMAGE send ...` / `receive ...` use the client.
ENTRYPOINT ["/usr/local/bin/vectis"]
CMD ["serve"]
