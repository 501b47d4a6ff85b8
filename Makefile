# Vectis. `make run` starts a standalone node on embedded defaults;
# `make test` runs the test suite. See README.md.

GO        ?= go
BIN       := bin/vectis
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X main.version=$(VERSION)
TOOLS_BIN := $(CURDIR)/.tools/bin
FUZZTIME  ?= 30s
BENCHTIME ?= 1x
TEST_TIMEOUT ?= 30m

export VECTIS_TOOLS_BIN := $(TOOLS_BIN)

.PHONY: all build size run test lint bench bench-failover fuzz tools e2e e2e-kind kind-node-image image clean

all: lint test

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/vectis

# The stripped release binary must stay within SIZE_LIMIT bytes (37 MB; it
# is 36.0 MB): a dependency that links the typed Kubernetes clientset again
# (about half the binary), or the like, fails here. The image's goal is
# 40 MB.
SIZE_LIMIT ?= 37000000
size: build
	@size=$$(wc -c < $(BIN)); \
	  echo "$(BIN): $$size bytes ($$(awk "BEGIN{printf \"%.1f\", $$size/1e6}") MB), limit $(SIZE_LIMIT)"; \
	  if [ $$size -gt $(SIZE_LIMIT) ]; then echo "$(BIN) is larger than $(SIZE_LIMIT) bytes"; exit 1; fi

run: build
	./$(BIN) serve --config examples/vectis-dev.yaml

test:
	$(GO) test -count=1 -timeout $(TEST_TIMEOUT) ./...

lint:
	@unformatted=$$(gofmt -l $$(git ls-files '*.go')); \
	  if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags e2e ./e2e/...
	staticcheck ./...
	staticcheck -tags e2e ./e2e/...

# Each fuzz target runs for FUZZTIME (go test allows one -fuzz target per
# run); tools/fuzz.sh says how it tells Go's own deadline race from a finding.
fuzz:
	GO=$(GO) FUZZTIME=$(FUZZTIME) ./tools/fuzz.sh

# BENCH selects benchmarks (a -bench pattern), BENCH_PKGS the packages;
# BENCH_SIZE and BENCH_PAIRS, when set, are the bytes per transfer and the
# rounds of BenchmarkRealPath (bench/realpath_test.go). For example:
#   make bench BENCH=RealPath BENCH_PKGS=./bench BENCH_SIZE=268435456 BENCH_PAIRS=3
BENCH      ?= .
BENCH_PKGS ?= ./...
bench:
	$(if $(BENCH_SIZE),VECTIS_BENCH_SIZE=$(BENCH_SIZE)) $(if $(BENCH_PAIRS),VECTIS_BENCH_PAIRS=$(BENCH_PAIRS)) \
	  $(GO) test -run '^$$' -bench '$(BENCH)' -benchmem -benchtime $(BENCHTIME) -timeout $(TEST_TIMEOUT) $(BENCH_PKGS)

# The end-to-end suite on a local control plane (real etcd, kube-apiserver,
# kube-controller-manager, PostgreSQL; vectis pods as processes). It prints a
# table, one row per scenario.
E2E_TIMEOUT ?= 45m
e2e: build
	VECTIS_E2E_BINARY=$(CURDIR)/$(BIN) $(GO) test -tags e2e -count=1 -timeout $(E2E_TIMEOUT) -v -run 'Test' ./e2e/...

# The same suite against a kind cluster (needs Docker; KEEP=1 keeps the
# cluster, STOCK_IMAGES=1 uses the registries' images instead of building them).
e2e-kind: tools
	./deploy/kind/e2e-kind.sh

# The kind node image (Kubernetes v1.36.3) and the e2e service images, built
# with no registry from the Go module proxy and a Debian mirror; skipped when
# they exist (FORCE=1 rebuilds). See tools/kind/node-image.sh.
kind-node-image:
	./tools/kind/node-image.sh

# Failover timing over repeated leader kills (p50/p99, with the failover spans).
bench-failover: build
	VECTIS_E2E_BINARY=$(CURDIR)/$(BIN) $(GO) test -tags e2e -count=1 -timeout 30m -run '^$$' -bench Failover -benchtime 1x -v ./e2e/...

# etcd, etcdctl, kube-apiserver, kube-controller-manager and helm, built from
# the Go module proxy in a separate module and cached in .tools/bin.
tools:
	./tools/build.sh $(TOOLS_BIN)

# The container image, built with no registry: the static binary on scratch
# (Dockerfile, context prepared by tools/image/build.sh).
IMAGE ?= vectis:$(VERSION)
image: build
	./tools/image/build.sh $(BIN) $(IMAGE) $(VERSION)

clean:
	rm -rf bin
