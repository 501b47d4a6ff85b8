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

.PHONY: all build run test lint bench fuzz tools e2e e2e-kind image clean

all: lint test

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/vectis

run: build
	./$(BIN) serve --config examples/vectis-dev.yaml

test:
	$(GO) test -count=1 -timeout $(TEST_TIMEOUT) ./...

lint:
	@unformatted=$$(gofmt -l $$(git ls-files '*.go')); \
	  if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...
	staticcheck ./...

# Each fuzz target runs for FUZZTIME (go test allows one -fuzz target per run).
fuzz:
	@set -e; for pkg in $$($(GO) list ./...); do \
	  for target in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz' || true); do \
	    echo "== $$pkg $$target ($(FUZZTIME))"; \
	    $(GO) test -run '^$$' -fuzz "^$$target$$" -fuzztime $(FUZZTIME) $$pkg; \
	  done; \
	done

bench:
	$(GO) test -run '^$$' -bench . -benchmem -benchtime $(BENCHTIME) ./...

# etcd, etcdctl, kube-apiserver, kube-controller-manager and helm, built from
# the Go module proxy in a separate module and cached in .tools/bin.
tools:
	./tools/build.sh $(TOOLS_BIN)

clean:
	rm -rf bin
