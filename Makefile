# fastepp — see README.md. Targets: run, test, bench, lint, build.
GO ?= go
PKGS ?= ./...
BENCHTIME ?= 1s
BIN := bin

.PHONY: all build test bench bench-smoke lint run fmt

all: lint build test

build:
	$(GO) build -o $(BIN)/ ./cmd/...

# Unit, integration and race tests; then the zero-allocation tests again
# without -race (the race detector makes sync.Pool drop items, so some skip
# under it); then a benchmark smoke run so every benchmark compiles and
# executes in CI (100 iterations each, not a measurement).
test:
	$(GO) test -race -count=1 -timeout 5m $(PKGS)
	$(GO) test -count=1 -timeout 5m -run 'Allocs' $(PKGS)
	$(MAKE) bench-smoke

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
