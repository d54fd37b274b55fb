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
HELM = $(TASKORCH_TOOLS_BIN)/helm
VERSION = $(shell sed -n 's/^__version__ = "\(.*\)"/\1/p' operator/taskorch/__init__.py)
# docker, or podman where that is what the machine has
CONTAINER ?= $(shell command -v docker 2>/dev/null || command -v podman 2>/dev/null)
IMAGE_PREFIX ?= ghcr.io/taskorch

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
system-packages: ## install the Debian packages the tests need (redis-server, shellcheck, chromium)
	@command -v redis-server >/dev/null && command -v shellcheck >/dev/null \
	  && command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	    $$SUDO apt-get install -y -qq redis-server shellcheck chromium chromium-driver >/dev/null; }

.PHONY: tools
tools: system-packages venv ## build the pinned control-plane binaries (cached) and the virtualenv
	tests/tools/build-tools.sh

.PHONY: lint
lint: venv system-packages ## ruff (lint + format check), mypy, hadolint, shellcheck
	$(VENV)/bin/ruff check operator tests
	$(VENV)/bin/ruff format --check operator tests
	$(VENV)/bin/mypy
	$(VENV)/bin/hadolint worker-image/Dockerfile.*
	shellcheck -x -P tests/tools tests/tools/*.sh

.PHONY: test
test: tools lint ## lint, unit tests, e2e tests (starts a control plane and Redis, stops them after)
	$(PY) -m pytest tests/unit tests/with_redis tests/e2e

.PHONY: unit
unit: tools ## unit tests only
	$(PY) -m pytest tests/unit

.PHONY: dev
dev: tools ## local control plane + Redis + operator + example worker + dashboard; the examples applied
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
	$(KUBECTL) apply -f examples/workflow.yaml
	$(KUBECTL) wait --for=condition=Succeeded workflow/image-processing-pipeline --timeout=60s
	$(KUBECTL) apply -f examples/taskqueue.yaml -f examples/schedule.yaml -f examples/workerpool.yaml
	$(KUBECTL) apply -f examples/dashboard-user.yaml
	tests/tools/devproc.sh start $(STATE) server \
	  $(CURDIR)/$(VENV)/bin/taskorch server --host 127.0.0.1 --port 8080
	@for _ in $$(seq 100); do curl -sf http://127.0.0.1:8080/healthz >/dev/null && break; sleep 0.1; done
	@echo
	@echo "  Dashboard: http://127.0.0.1:8080/  (sign in with the token from"
	@echo "    kubectl create token taskorch-dev --duration 8h)"
	@echo "  HTTP API:  http://127.0.0.1:8080/docs"
	@echo
	@echo "  The WorkerPool 'workers' scales the taskorch-worker Deployment (kwok pods) by the"
	@echo "  default queue; the local worker does the work. Watch it wake and go back to 0:"
	@echo "    taskorch enqueue process_image --count 2000 --payload '{\"image_url\": \"s3://x\"}'"
	@echo "    kubectl get workerpools -w"
	@echo "  export KUBECONFIG=$(CURDIR)/$(STATE)/kubeconfig PATH=$(TASKORCH_TOOLS_BIN):\$$PATH"
	@echo "  export TASKORCH_REDIS_URL=$$(cat $(STATE)/redis/url)"
	@echo "  kubectl get tasks        # logs: $(STATE)/operator.log, $(STATE)/worker.log"

.PHONY: down
down: ## stop what `make dev` started
	-tests/tools/devproc.sh stop $(STATE) server
	-tests/tools/devproc.sh stop $(STATE) worker
	-tests/tools/devproc.sh stop $(STATE) operator
	-tests/tools/redis.sh down $(STATE)/redis
	-tests/tools/cluster.sh down $(DEV_CLUSTER)

.PHONY: crds
crds: venv ## regenerate the CRD YAML from the pydantic models (crds/ and the chart's copy)
	$(VENV)/bin/taskorch crds --out crds --out charts/taskorch/crds

BENCH_VENV := bench/.venv
$(BENCH_VENV)/.installed: pyproject.toml bench/requirements.txt
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install -q --upgrade pip
	$(BENCH_VENV)/bin/pip install -q -e '.[server]' -r bench/requirements.txt
	touch $@

.PHONY: bench
bench: tools $(BENCH_VENV)/.installed ## benchmarks vs Celery/RQ/Dramatiq/arq and the CR path; writes bench/results
	PYTHONPATH=$(CURDIR):$(CURDIR)/worker-image/examples PATH=$(CURDIR)/$(BENCH_VENV)/bin:$$PATH \
	  $(BENCH_VENV)/bin/python -m bench.run $(BENCH_ARGS)

.PHONY: chart
chart: tools ## lint the Helm chart and render it with defaults and with every option on
	$(HELM) lint charts/taskorch
	$(HELM) lint charts/taskorch -f tests/e2e/values-all-on.yaml
	$(HELM) template taskorch charts/taskorch -f tests/e2e/values-all-on.yaml >/dev/null

.PHONY: images
images: ## build the operator and worker images (needs docker or podman)
	@[ -n "$(CONTAINER)" ] || { echo "make images needs docker or podman" >&2; exit 1; }
	$(CONTAINER) build -f worker-image/Dockerfile.operator -t $(IMAGE_PREFIX)/taskorch-operator:$(VERSION) .
	$(CONTAINER) build -f worker-image/Dockerfile.worker -t $(IMAGE_PREFIX)/taskorch-worker:$(VERSION) .

.PHONY: kind-up
kind-up: images ## kind cluster + images + the chart (container tasks on) + the example Task and container Task (needs Docker and kind)
	@command -v kind >/dev/null || { echo "make kind-up needs kind (https://kind.sigs.k8s.io)" >&2; exit 1; }
	kind get clusters | grep -qx taskorch || kind create cluster --config worker-image/kind-config.yaml
	kind load docker-image --name taskorch \
	  $(IMAGE_PREFIX)/taskorch-operator:$(VERSION) $(IMAGE_PREFIX)/taskorch-worker:$(VERSION)
	$(HELM) upgrade --install taskorch charts/taskorch --namespace taskorch --create-namespace --wait \
	  --kube-context kind-taskorch --set operator.containerTasks.enabled=true
	$(TASKORCH_TOOLS_BIN)/kubectl --context kind-taskorch -n taskorch apply -f examples/task.yaml -f examples/container-task.yaml
	$(TASKORCH_TOOLS_BIN)/kubectl --context kind-taskorch -n taskorch wait --for=condition=Succeeded task/resize-1 task/hello-container --timeout=300s

.PHONY: kind-down
kind-down: ## delete the kind cluster
	kind delete cluster --name taskorch
