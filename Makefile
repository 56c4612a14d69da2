# lsnpool developer tasks. `make help` lists them.
#
# R2_APPLY_DELAY (e.g. 300ms) sets replica r2's recovery_min_apply_delay on `make env-up`.

SHELL := /bin/bash
.DEFAULT_GOAL := help

PGENV := testenv/pgenv.sh
export R2_APPLY_DELAY

.PHONY: help run test fuzz drivers demo demo-critical build bench env-up env-down env-status clean

help: ## Show this help
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) \
		| awk 'BEGIN {FS = ":.*## "}; {printf "  %-12s %s\n", $$1, $$2}'

## ---- the two commands ----

run: ## Build (release), start the local topology, run lsnpool on pooler.toml in the foreground
	cargo build --release --bin lsnpool
	$(PGENV) up
	@echo
	@echo "lsnpool is starting on 127.0.0.1:6432. In another terminal:"
	@echo "  psql 'postgresql://postgres:postgres@127.0.0.1:6432/appdb'          # automatic LSN routing"
	@echo "  psql 'postgresql://postgres:postgres@127.0.0.1:6432/app_read'       # replicas, bounded staleness"
	@echo "  psql 'postgresql://postgres:postgres@127.0.0.1:6432/app_primary'    # always the primary"
	@echo "  psql 'postgresql://postgres:postgres@127.0.0.1:6432/lsnpool'        # admin console"
	@echo "  curl -s http://127.0.0.1:9930/metrics                               # Prometheus"
	@echo
	./target/release/lsnpool --config pooler.toml

test: ## All tests: unit, integration against the real local topology, driver battery
	$(PGENV) up
	tests/drivers/install.sh
	@mkdir -p target
	cargo test --workspace --no-fail-fast 2>&1 | tee target/test.log; exit $${PIPESTATUS[0]}

fuzz: ## Property tests of framing, startup packet, batch analysis and classifier with FUZZ_CASES (200000) cases each, then FUZZ_WIRE_CASES (5000) random message sequences against a running lsnpool
	$(PGENV) up
	PROPTEST_CASES=$${FUZZ_CASES:-200000} cargo test -p lsnpool-protocol -p lsnpool-router --test fuzz
	PROPTEST_CASES=$${FUZZ_CASES:-200000} cargo test -p lsnpool-proxy --lib batch::fuzz
	LSNPOOL_FUZZ_WIRE_CASES=$${FUZZ_WIRE_CASES:-5000} cargo test --test fuzz_wire -- --nocapture

drivers: ## Install the driver battery's clients (python venv, npm, pgjdbc) into target/drivers
	tests/drivers/install.sh

demo: ## Read-your-writes through `make run`'s lsnpool (or one of its own), then across two instances sharing Redis
	testenv/demo.sh

demo-critical: ## Operator controls on an lsnpool of its own: a query rule, the breaker tripping and closing, the kill switch
	testenv/demo_critical.sh

build: ## Debug build of everything
	cargo build --workspace --all-targets

bench: ## Benchmarks vs PgBouncer and direct (~15 min; QUICK=1 ~5 min, ends with the CHECK line) -> benches/results/latest.md
	QUICK="$(QUICK)" benches/run.sh

## ---- test environment (primary :55432, r1 :55433, r2 :55434) ----

env-up: ## Start primary + 2 streaming replicas (R2_APPLY_DELAY=300ms for a lagging r2)
	$(PGENV) up

env-down: ## Stop the test PostgreSQL nodes (data kept)
	$(PGENV) down

env-status: ## Show the test PostgreSQL nodes
	$(PGENV) status

clean: ## Stop the test environment and delete its data (testenv/data)
	$(PGENV) clean
