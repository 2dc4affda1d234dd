# joingate. `make test` installs what the tests need (redis-server) when it
# is missing, then runs every test against real NATS and Redis servers.

GO      ?= go
BIN     := bin/joingate
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)
# Debian packages the tests run: redis-server is started by the tests (it
# brings redis-cli for the cluster tests); prometheus ships promtool, which
# checks the alert rules, and the server the dashboard queries run against.
TEST_PACKAGES := redis-server prometheus

.PHONY: all build run test test-deps lint fuzz bench chaos clean

all: lint test build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/joingate

# The embedded default: in-process NATS, gateway and worker, limits in memory.
run:
	$(GO) run ./cmd/joingate all

test: test-deps
	$(GO) test -race -count=1 ./...

# Installs the servers the tests start, through apt-get, when missing.
test-deps:
	@missing=""; \
	for p in $(TEST_PACKAGES); do command -v $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null 2>&1; then SUDO=sudo; else \
			echo "missing:$$missing; install it with: apt-get install$$missing" >&2; exit 1; fi; \
		echo "installing$$missing (apt-get)"; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

lint:
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) mod tidy -diff

# A short run of every fuzz target (FUZZTIME per target).
FUZZTIME ?= 20s
fuzz:
	$(GO) test ./pkg/callback -run '^$$' -fuzz FuzzDecodeJoinGroup -fuzztime $(FUZZTIME)
	$(GO) test ./pkg/config -run '^$$' -fuzz FuzzLoad -fuzztime $(FUZZTIME)

bench: test-deps
	$(GO) test -run '^$$' -bench . -benchmem ./...

# Fault scenarios under load (kill a worker, restart NATS, stop and pause
# Redis, SIGTERM): every answer checked, each scenario's counts printed and
# appended to $(CHAOS_REPORT) when set (RELIABILITY.md quotes them).
CHAOS_REPORT ?=
chaos: test-deps
	CHAOS_REPORT=$(CHAOS_REPORT) $(GO) test -tags chaos -count=1 -run Chaos -v ./cmd/joingate

clean:
	rm -rf bin
