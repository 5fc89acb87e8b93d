# fastepp — see README.md. Targets: run, test, bench, lint, build.
GO ?= go
PKGS ?= ./...
BENCHTIME ?= 1s
BIN := bin

.PHONY: all build test bench bench-smoke lint run fmt kube-assets

all: lint build test

build:
	$(GO) build -o $(BIN)/ ./cmd/...

# Unit, integration and race tests; then the zero-allocation tests again
# without -race (the race detector makes sync.Pool drop items, so some skip
# under it) with bench/plan's real-time cross-check (timing: left out of
# -race builds); then a benchmark smoke run so every benchmark compiles and
# executes in CI (100 iterations each, not a measurement). The Kubernetes
# tests run a real kube-apiserver and etcd, and render the chart with helm:
# kube-assets builds them first (once per machine, ~15 min; cached by
# version, see scripts/kube-assets.sh and scripts/helm.sh). The extproc
# package's tests run a second time with its server on the direct transport
# (extproc/direct.go) instead of grpc-go.
test: kube-assets
	$(GO) test -race -count=1 -timeout 10m $(PKGS)
	FASTEPP_EXTPROC_TRANSPORT=direct $(GO) test -race -count=1 -timeout 10m ./extproc
	$(GO) test -count=1 -timeout 10m -run 'Allocs|CrossCheck' $(PKGS)
	$(MAKE) bench-smoke

kube-assets:
	@bash scripts/kube-assets.sh >/dev/null
	@bash scripts/helm.sh >/dev/null
	@# controller's TestGeneratedUpToDate builds controller-gen: warm the build cache once
	@$(GO) build -C tools/controllergen -o /dev/null sigs.k8s.io/controller-tools/cmd/controller-gen

bench-smoke:
	$(GO) test -run '^$$' -bench . -benchtime 100x -timeout 5m $(PKGS)

# Real measurements: benchstat-friendly output (count 6).
bench:
	$(GO) test -run '^$$' -bench . -benchmem -benchtime $(BENCHTIME) -count 6 $(PKGS)

# The bench's default scenario, one repeat: round-robin, least-request and epp
# (GIE's default config, then fastepp's recommended one) side by side on fresh
# simulated fleets; prints the table and writes bench-results/default/
# (summary.json, report.html). SCENARIO=, STRATEGIES=, REPEATS= pick others;
# STACK=1 runs the real binaries as separate processes instead (./out/).
run:
	GO="$(GO)" BIN="$(BIN)" bash scripts/run-local.sh

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null; git ls-files --others --exclude-standard '*.go' 2>/dev/null)); \
	if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)

fmt:
	gofmt -w $$(git ls-files '*.go'; git ls-files --others --exclude-standard '*.go')

# gpustats' amd-smi cgo binding (build tag amdsmi) against a stub libamd_smi
# built from gpustats/testdata/amdsmi-stub (canned values and error codes);
# on a ROCm host, build against /opt/rocm instead (see gpustats/doc.go).
test-amdsmi:
	@set -e; d=$$(mktemp -d); trap 'rm -rf "$$d"' EXIT; \
	stub="$(CURDIR)/gpustats/testdata/amdsmi-stub"; \
	$${CC:-gcc} -shared -fPIC -O1 -Wall -Werror -I"$$stub" -o "$$d/libamd_smi.so" "$$stub/amdsmi_stub.c"; \
	CGO_ENABLED=1 CGO_CFLAGS="-I$$stub" CGO_LDFLAGS="-L$$d" LD_LIBRARY_PATH="$$d" \
		$(GO) test -tags amdsmi -count=1 -timeout 5m ./gpustats/... ./cmd/gpustats/...
.PHONY: test-amdsmi

# The epp container image (Dockerfile): a static CGO-free binary on distroless
# static, nonroot. Uses CONTAINER_ENGINE if set, else the first of podman,
# docker (when its daemon answers) and buildah. IMAGE_TAG defaults to
# `git describe`; IMAGE_BUILD_ARGS passes more (e.g. --build-arg
# GO_IMAGE=mirror/golang:1.26).
IMAGE ?= ghcr.io/fastepp/epp
image: IMAGE_TAG ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
image:
	@set -e; engine="$(CONTAINER_ENGINE)"; \
	if [ -z "$$engine" ]; then \
		for e in podman docker buildah; do \
			command -v $$e >/dev/null 2>&1 || continue; \
			if [ $$e = docker ] && ! docker info >/dev/null 2>&1; then \
				echo "make image: docker is installed but its daemon does not answer; trying the next engine" >&2; continue; fi; \
			engine=$$e; break; \
		done; \
	fi; \
	if [ -z "$$engine" ]; then \
		echo "make image: no container engine: install podman, docker (with a running daemon) or buildah, or set CONTAINER_ENGINE" >&2; exit 1; \
	fi; \
	build="$$engine build"; [ "$$(basename $$engine)" = buildah ] && build="$$engine bud"; \
	echo "make image: $$build -t $(IMAGE):$(IMAGE_TAG)"; \
	$$build --build-arg VERSION=$(IMAGE_TAG) $(IMAGE_BUILD_ARGS) -t $(IMAGE):$(IMAGE_TAG) -f Dockerfile .
.PHONY: image
