# driftline developer tasks. Run `make` (or `make help`) to list them.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
STACK := deploy/local/stack.sh
# Put the local stack's addresses (DRIFTLINE_KAFKA_BOOTSTRAP, DRIFTLINE_REDIS_URL, ...) in the env.
STACK_ENV = eval "$$(bash $(STACK) env)"
PYTEST_ARGS ?=

.PHONY: help install stack-up stack-down stack-status lint test test-cluster docs bench demo

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

install: ## pip install the package in editable mode with dev extras
	$(PYTHON) -m pip install -q -e '.[dev]'

stack-up: ## install (if missing) and start Kafka, Redis, Prometheus, Alertmanager on 127.0.0.1
	bash $(STACK) install
	bash $(STACK) up

stack-down: ## stop the local stack (data is kept)
	bash $(STACK) down

stack-status: ## show which local services are up
	bash $(STACK) status

lint: ## ruff (lint and format) + mypy
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .
	$(PYTHON) -m mypy

test: ## lint, then pytest against the running local stack (extra args: PYTEST_ARGS=...)
	$(MAKE) lint
	$(STACK_ENV); $(PYTHON) -m pytest -q $(PYTEST_ARGS)

test-cluster: ## the integration suite against a 3-node Redis Cluster (deploy/local/redis-cluster.sh)
	bash deploy/local/redis-cluster.sh up
	$(STACK_ENV); export DRIFTLINE_REDIS_URL=redis+cluster://127.0.0.1:17001/0; \
		$(PYTHON) -m pytest -q tests/integration $(PYTEST_ARGS)

docs: ## regenerate the generated references and dashboards (config, metrics, CLI, Grafana)
	$(PYTHON) -m driftline.config_reference --write docs/configuration.md
	$(PYTHON) -m driftline.metrics_reference --write docs/metrics.md
	$(PYTHON) -m driftline.cli_reference --write docs/cli.md
	$(PYTHON) deploy/grafana/generate.py

bench: ## throughput benchmark against the local stack
	$(STACK_ENV); $(PYTHON) bench/throughput.py

demo: ## install, start the stack, run the demo
	$(MAKE) install stack-up
	$(STACK_ENV); $(PYTHON) -m driftline.cli demo
