# The commands people type. Each one installs what it needs and is safe to run again.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STATE := .dev
DEV_CLUSTER := taskorch-dev
export TASKORCH_TOOLS_BIN = $(shell tests/tools/build-tools.sh --print-bin)
KUBECTL = KUBECONFIG=$(STATE)/kubeconfig $(TASKORCH_TOOLS_BIN)/kubectl

.PHONY: help
help: ## list the commands
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev]'
	touch $@

.PHONY: venv
venv: $(VENV)/.installed

.PHONY: system-packages
system-packages: ## install the Debian packages the tests need (redis-server)
	@command -v redis-server >/dev/null || { \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq redis-server >/dev/null; }

.PHONY: tools
tools: system-packages venv ## build the pinned control-plane binaries (cached) and the virtualenv
	tests/tools/build-tools.sh

.PHONY: lint
lint: venv ## ruff (lint + format check) and mypy
	$(VENV)/bin/ruff check operator tests
	$(VENV)/bin/ruff format --check operator tests
	$(VENV)/bin/mypy

.PHONY: test
test: tools lint ## lint, unit tests, e2e tests (starts a control plane and Redis, stops them after)
	$(PY) -m pytest tests/unit tests/e2e

.PHONY: unit
unit: tools ## unit tests only
	$(PY) -m pytest tests/unit

.PHONY: dev
dev: tools ## local control plane + Redis + operator + example worker, and the example Task applied
	tests/tools/cluster.sh up $(DEV_CLUSTER) $(STATE)/kubeconfig
	tests/tools/redis.sh up $(STATE)/redis
	$(KUBECTL) apply --server-side -f crds/
	$(KUBECTL) wait --for=condition=Established crd --all --timeout=60s
	tests/tools/devproc.sh start $(STATE) operator \
	  $(CURDIR)/$(VENV)/bin/taskorch operator --liveness http://127.0.0.1:18080/healthz
	PYTHONPATH=$(CURDIR)/worker-image/examples tests/tools/devproc.sh start $(STATE) worker \
	  $(CURDIR)/$(VENV)/bin/taskorch worker --app taskorch_examples:app --queues default
	$(KUBECTL) apply -f examples/task.yaml
	$(KUBECTL) wait --for=condition=Succeeded task/resize-1 --timeout=60s
	@echo
	@echo "  export KUBECONFIG=$(CURDIR)/$(STATE)/kubeconfig PATH=$(TASKORCH_TOOLS_BIN):\$$PATH"
	@echo "  export TASKORCH_REDIS_URL=$$(cat $(STATE)/redis/url)"
	@echo "  kubectl get tasks        # logs: $(STATE)/operator.log, $(STATE)/worker.log"

.PHONY: down
down: ## stop what `make dev` started
	-tests/tools/devproc.sh stop $(STATE) worker
	-tests/tools/devproc.sh stop $(STATE) operator
	-tests/tools/redis.sh down $(STATE)/redis
	-tests/tools/cluster.sh down $(DEV_CLUSTER)

.PHONY: crds
crds: venv ## regenerate the CRD YAML from the pydantic models
	$(VENV)/bin/taskorch crds --out crds

BENCH_VENV := bench/.venv
$(BENCH_VENV)/.installed: pyproject.toml bench/requirements.txt
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install -q --upgrade pip
	$(BENCH_VENV)/bin/pip install -q -e . -r bench/requirements.txt
	touch $@

.PHONY: bench
bench: tools $(BENCH_VENV)/.installed ## benchmarks vs Celery/RQ/Dramatiq/arq and the CR path; writes bench/results
	PYTHONPATH=$(CURDIR):$(CURDIR)/worker-image/examples PATH=$(CURDIR)/$(BENCH_VENV)/bin:$$PATH \
	  $(BENCH_VENV)/bin/python -m bench.run $(BENCH_ARGS)
