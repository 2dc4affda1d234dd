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

.PHONY: all build run test test-deps lint fuzz bench redis-instructions chaos soak clean

all: lint test build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/joingate

# The embedded default: in-process NATS, gateway and worker, limits in memory.
run:
	$(GO) run ./cmd/joingate all

# The conformance suite (pkg/conformance) is a module of its own, so that
# OpenIM's dependency tree stays out of joingate's go.mod: it drives the
# joingate binaries with open-im-server's own webhook client.
CONFORMANCE := pkg/conformance

test: test-deps
	$(GO) test -race -count=1 ./...
	cd $(CONFORMANCE) && $(GO) test -count=1 ./...

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

# staticcheck runs at a pinned version through the module proxy (go run
# pkg@version changes no go.mod); -tags chaos covers the chaos tests too.
STATICCHECK = $(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2

lint:
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags chaos ./cmd/joingate
	$(STATICCHECK) -tags chaos ./...
	$(GO) mod tidy -diff
	cd $(CONFORMANCE) && $(GO) vet ./... && $(STATICCHECK) ./... && $(GO) mod tidy -diff

# Exploratory fuzzing: a run of every fuzz target, FUZZTIME each, before
# each submission (not in CI, which must not fail on an input nobody has
# seen: `make test` runs every seed corpus, past findings included). A
# failing input is written under the package's testdata/fuzz/<target>/ and
# from then on fails `make test` too, until fixed; commit it, fixed, as a
# seed. Go 1.26's fuzz coordinator
# can also fail a clean run with a bare "context deadline exceeded" as
# FUZZTIME ends (go.dev/issue/75804, fixed in Go 1.27): such a run, with no
# failing input written, counts as passed.
FUZZTIME ?= 20s
FUZZ_TARGETS := ./pkg/callback:FuzzDecodeJoinGroup ./pkg/callback:FuzzAppendIMServerJoinGroup ./pkg/callback:FuzzCommand ./pkg/callback:FuzzDecodeMembers ./pkg/config:FuzzLoad ./gateway:FuzzRoute ./pkg/natsconn:FuzzParseFramed ./pkg/natsconn:FuzzParseTagged
fuzz:
	@for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t##*:}; \
		echo "fuzz $$name in $$pkg for $(FUZZTIME)"; \
		out=$$($(GO) test $$pkg -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) 2>&1); rc=$$?; \
		printf '%s\n' "$$out" | grep -v '^fuzz: elapsed' ; \
		printf '%s\n' "$$out" | grep '^fuzz: elapsed' | tail -n 1; \
		if [ $$rc -ne 0 ]; then \
			if printf '%s\n' "$$out" | grep -qx '    context deadline exceeded' && \
				! printf '%s\n' "$$out" | grep -q 'Failing input written'; then \
				echo "$$name: go.dev/issue/75804 at the end of FUZZTIME, no failing input: passed"; \
			else exit 1; fi; \
		fi; \
	done

# The Go benchmarks (with allocations), then `joingate bench suite`: the
# reference server, `joingate all` with Redis, the floor (`all` with no
# limits), the distributed set (its own
# nats-server, gateway, two workers, Redis) and a flood under the same
# generator on this machine, open loops at 5,000 and 10,000 req/s, and the
# table of BENCHMARKS.md. Both always run; either failing
# fails the target. BENCH_FLAGS go to the suite, e.g.
#   make bench BENCH_FLAGS='--duration 30s --profile all.pprof'
BENCH_FLAGS ?=
BENCH_BIN   := bin/bench
bench: test-deps
	status=0; \
	$(GO) test -run '^$$' -bench . -benchmem ./... || status=1; \
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BENCH_BIN)/joingate ./cmd/joingate && \
	$(GO) build -o $(BENCH_BIN)/nats-server github.com/nats-io/nats-server/v2 && \
	$(BENCH_BIN)/joingate bench suite --nats-server $(BENCH_BIN)/nats-server $(BENCH_FLAGS) || status=1; \
	exit $$status

# Redis's instructions per query of the decision script: BenchmarkDecideScript
# against a redis-server under valgrind's callgrind, twice (300 and 600
# calls of 32 queries), the difference over the 9,600 more queries. It
# repeats from run to run where Redis's CPU time on a shared machine does
# not (BENCHMARKS.md): compare two versions of the script with it.
redis-instructions: test-deps
	@command -v valgrind >/dev/null || { apt-get update -qq && apt-get install -y -qq valgrind; }
	@dir=$$(mktemp -d); trap 'rm -rf $$dir' EXIT; \
	for n in 300 600; do \
		valgrind --tool=callgrind --callgrind-out-file=$$dir/cg.$$n redis-server --port 0 \
			--unixsocket $$dir/redis.sock --save '' --appendonly no >$$dir/valgrind.log 2>&1 & pid=$$!; \
		for i in $$(seq 100); do redis-cli -s $$dir/redis.sock ping >/dev/null 2>&1 && break; sleep 0.2; done; \
		JOINGATE_BENCH_REDIS=unix://$$dir/redis.sock $(GO) test -run '^$$' -bench '^BenchmarkDecideScript$$' \
			-benchtime $${n}x ./pkg/ratelimit >$$dir/bench.$$n 2>&1; rc=$$?; \
		redis-cli -s $$dir/redis.sock shutdown nosave >/dev/null 2>&1 || kill $$pid; wait $$pid; \
		[ $$rc -eq 0 ] || { cat $$dir/bench.$$n; exit 1; }; \
	done; \
	a=$$(sed -n 's/^summary: //p' $$dir/cg.300); b=$$(sed -n 's/^summary: //p' $$dir/cg.600); \
	echo "redis-server: $$(( (b - a) / 9600 )) instructions per query ($$a and $$b in all)"

# Fault scenarios under load (kill a worker, restart NATS, stop and pause
# Redis, a busy Redis, SIGTERM): every answer checked, each scenario's counts printed and
# appended to $(CHAOS_REPORT) when set (RELIABILITY.md quotes them).
CHAOS_REPORT ?=
chaos: test-deps
	CHAOS_REPORT=$(CHAOS_REPORT) $(GO) test -tags chaos -count=1 -run Chaos -v ./cmd/joingate

# A long run of `joingate all` with Redis at half the reference server's rate (open
# loop), sampling RSS, goroutines and open files every 5s; fails if one of
# them keeps growing. Not in CI: 10 minutes by default, e.g.
#   make soak SOAK_FLAGS='--duration 2m'
SOAK_FLAGS ?=
soak: test-deps
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BENCH_BIN)/joingate ./cmd/joingate
	$(BENCH_BIN)/joingate bench soak $(SOAK_FLAGS)

clean:
	rm -rf bin
