# identity-webhooks — every command a developer or CI needs. `make run` and `make test` each do
# their own set-up on a fresh machine (virtualenv, Kafka from Maven Central, PostgreSQL).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: setup tools kafka-up kafka-down postgres-up postgres-down lint fmt test test-unit test-fuzz test-chaos run bench bench-quick bench-cost bench-scale bench-clients bench-ops clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,tracing]'
	@touch $@

# kustomize and promtool for tests/deploy, in .cache/tools/bin, and Debian's chromium for the
# console's browser test (apt-get, as root, only when /usr/bin/chromium is missing); a no-op
# once they are there.
tools:
	deploy/local/tools.sh

kafka-up: setup
	deploy/local/kafka.sh start

kafka-down:
	deploy/local/kafka.sh stop

postgres-up:
	deploy/local/postgres.sh start

postgres-down:
	deploy/local/postgres.sh stop

# The Python of the product (service), its tests, the development tools and the bench.
CODE := service tests tools bench

lint: setup
	$(BIN)/ruff check $(CODE)
	$(BIN)/ruff format --check $(CODE)
	$(BIN)/mypy

fmt: setup
	$(BIN)/ruff check --fix $(CODE)
	$(BIN)/ruff format $(CODE)

# Starts Kafka and PostgreSQL unless they already run, runs lint and the whole suite, and stops
# what it started even when a test fails. The suite runs on pytest-xdist's WORKERS processes:
# one more than the cores, at least 3 (its tests wait on brokers, servers and subprocesses more
# than they compute: on 2 cores, 3 workers took a clean clone's run from 10:01 to 8:32); the
# fault tests on one of them, in turn (tests/support/parallel.py).
WORKERS ?= $(shell n=$$(nproc); echo $$(( n < 2 ? 3 : n + 1 )))
test: setup tools
	deploy/local/with-services.sh $(MAKE) --no-print-directory lint _pytest

_pytest:
	$(BIN)/pytest -n $(WORKERS) $(PYTEST_ARGS)

# The fault suite at its full sizes (20,000-event streams, three kills, a 20 s store
# outage): ~10 min. `make test` runs the same tests bounded. One ledger line per fault.
test-chaos: setup
	@mkdir -p var
	set -o pipefail; WEBHOOKS_CHAOS_FULL=1 deploy/local/with-services.sh \
	  $(BIN)/pytest tests/chaos -m chaos -s $(PYTEST_ARGS) | tee var/chaos.log \
	  | grep -E "^chaos-ledger|[0-9]+ (passed|failed)"

# The unit tier alone: no Kafka, no PostgreSQL, no browser, under 20 s. In one process: two
# workers' start-up (each imports and collects everything) costs more than they save here. The
# API fuzzer's pytest plugin is for the integration tier only.
test-unit: setup
	$(BIN)/pytest tests/unit -m unit -p no:schemathesis $(PYTEST_ARGS)

# The hostile-input suites at length (`make test` runs them short): schemathesis with
# FUZZ_EXAMPLES per API operation, and HYPOTHESIS_RECORDS_EXAMPLES batches of hostile Kafka
# records. FUZZ_SEED picks another seed. Output in var/fuzz/.
FUZZ_EXAMPLES ?= 500
HYPOTHESIS_RECORDS_EXAMPLES ?= 200
test-fuzz: setup
	FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) HYPOTHESIS_RECORDS_EXAMPLES=$(HYPOTHESIS_RECORDS_EXAMPLES) \
	  deploy/local/with-services.sh $(BIN)/pytest -s $(PYTEST_ARGS) \
	  tests/integration/test_fuzz_api.py tests/integration/test_hostile_records.py

# The demo: local Kafka, the service on the embedded SQLite store, a receiver that checks both
# signatures, a subscription and the seed page's three events; prints the API's and the
# console's addresses; Ctrl-C stops all it started.
run: setup
	@deploy/local/demo.sh || test $$? -eq 130

# The benchmarks of bench/ (never part of `make test`; bench/README.md): every scenario, 3 runs
# each (~25 min), or scenarios 1, 2, 4 (at 50 events/s) and 5 once and short plus `bench-ops`
# at 5,000 deliveries (`bench-quick`, ~4 min). Results in var/bench/. BASELINE=REV (a git revision)
# runs each beside REV, checked out in var/baseline/, alternating (bench.paired; ROUNDS,
# default 2): twice as long, and a table of new / baseline in var/bench/paired-<timestamp>.md.
# `bench-cost` is the service's CPU per delivery at RATE events/s (bench.profile
# --cost-only), paired when BASELINE is set.
BASELINE ?=
ROUNDS ?=
# The baseline side's harness: `current` runs today's bench against REV's service (the
# same load and figures on both sides; REV's store must take today's bench's subscriptions),
# `own` REV's own harness (bench, or tests.bench in a revision from before it moved).
HARNESS ?= current
RATE ?= 500
COST_SECONDS ?= 20
PAIRED = $(PY) -m bench.paired --baseline $(BASELINE) --harness $(HARNESS) \
  $(if $(ROUNDS),--rounds $(ROUNDS)) --
bench: setup $(VENV)/.bench
	deploy/local/with-services.sh $(if $(BASELINE),$(PAIRED),$(PY) -m bench) $(BENCH_ARGS)

bench-quick: setup $(VENV)/.bench
	deploy/local/with-services.sh $(if $(BASELINE),$(PAIRED),$(PY) -m bench) --quick \
	  $(BENCH_ARGS)
	SERVICES=postgres deploy/local/with-services.sh $(PY) -m bench.operations \
	  --deliveries 5000 --repeat 10 --depth 10

bench-cost: setup $(VENV)/.bench
	deploy/local/with-services.sh $(if $(BASELINE),$(PAIRED) profile,$(PY) -m bench.profile) \
	  --rate $(RATE) --seconds $(COST_SECONDS) --cost-only $(BENCH_ARGS)

# The CPU per lone event of the two clients the service must use, bare (an aiokafka consumer,
# an aiohttp POST) at CLIENT_RATE events/s: the floor under `bench-cost` at that rate.
CLIENT_RATE ?= 50
# How the costs grow with the platform (bench.scale, ~1 h): the subscription index at 1k, 10k and
# 100k subscriptions; 500 events/s beside 0, 100k and 1M open deliveries owed to dead endpoints,
# on both stores; and, after `python -m bench.history seed` (20 million delivered deliveries on
# PostgreSQL, ~15 min once), the purge and 500 events/s while it runs. SCALE_ARGS: e.g.
# --subscriptions 1000,10000 --backlogs 0,100000 --skip history. Results in var/bench/scale-*.
SCALE_ARGS ?=
bench-scale: setup $(VENV)/.bench
	deploy/local/with-services.sh $(PY) -m bench.scale $(SCALE_ARGS)

bench-clients: setup
	SERVICES=kafka deploy/local/with-services.sh $(PY) -m bench.client_floor --rate $(CLIENT_RATE)

# The delivery log and the subscription summaries with 100,000 deliveries in each store: seeded
# through the store's write path, each call timed (median, p95) with its query plans; ~2 min, needs
# only PostgreSQL. Results in var/bench/operations/. OPS_ARGS: e.g. --store sqlite, --baseline FILE.
OPS_ARGS ?=
bench-ops: setup
	SERVICES=postgres deploy/local/with-services.sh $(PY) -m bench.operations $(OPS_ARGS)

$(VENV)/.bench: pyproject.toml
	$(PY) -m pip install -q -e '.[dev,bench]'
	@touch $@

clean:
	-deploy/local/kafka.sh stop
	-deploy/local/postgres.sh stop
	rm -rf $(VENV) var .cache .mypy_cache .ruff_cache .pytest_cache *.egg-info
