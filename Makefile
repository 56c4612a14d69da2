# lsnpool developer tasks. `make help` lists them.
#
# R2_APPLY_DELAY (e.g. 300ms) sets replica r2's recovery_min_apply_delay on `make env-up`.

SHELL := /bin/bash
.DEFAULT_GOAL := help

PGENV := testenv/pgenv.sh
R2_APPLY_DELAY ?= 0
export R2_APPLY_DELAY

.PHONY: help env-up env-down env-status clean

help: ## Show this help
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) \
		| awk 'BEGIN {FS = ":.*## "}; {printf "  %-12s %s\n", $$1, $$2}'

## ---- test environment (primary :55432, r1 :55433, r2 :55434) ----

env-up: ## Start primary + 2 streaming replicas (R2_APPLY_DELAY=300ms for a lagging r2)
	$(PGENV) up

env-down: ## Stop the test PostgreSQL nodes (data kept)
	$(PGENV) down

env-status: ## Show the test PostgreSQL nodes
	$(PGENV) status

clean: ## Stop the test environment and delete its data (testenv/data)
	$(PGENV) clean
