# modeldeploy developer entry points. `make help` lists them.
SHELL := /usr/bin/env bash
.DEFAULT_GOAL := help

VENV := .venv
PY := $(VENV)/bin/python
# The local control plane, the node agent, Prometheus, Argo CD and the gateway are started and stopped by these scripts.
SCRIPTS := testkit/scripts
export KUBECONFIG ?= $(CURDIR)/.cluster/kubeconfig

.PHONY: help
help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-16s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml runtime/pyproject.toml testkit/pyproject.toml uv.lock $(SCRIPTS)/install.sh
	$(SCRIPTS)/install.sh sync
	@touch $@

.PHONY: install
install: $(VENV)/.installed ## Create .venv/ with the operator, the runtime and the dev tools (pinned by uv.lock)

.PHONY: lock
lock: ## Re-resolve uv.lock after a dependency change
	$(SCRIPTS)/install.sh lock

.PHONY: tools
tools: ## Build (or reuse from the cache) the control plane's binaries
	$(SCRIPTS)/build-tools.sh

.PHONY: tools-prometheus
tools-prometheus: ## Build (or reuse from the cache) Prometheus, for the metrics tests (5-13 minutes cold)
	$(SCRIPTS)/build-tools.sh prometheus

.PHONY: tools-gateway
tools-gateway: ## Build (or reuse from the cache) Contour and fetch the gateway's CRDs (2-5 minutes with warm Go caches)
	$(SCRIPTS)/build-tools.sh gateway

.PHONY: cluster-up
cluster-up: tools ## Start the local control plane (idempotent); kubeconfig in .cluster/kubeconfig
	$(SCRIPTS)/cluster-up.sh

.PHONY: cluster-up-agent
cluster-up-agent: install tools ## The control plane plus the node agent, whose nodes run pods as real processes (root)
	MODELDEPLOY_NODE_AGENT=1 $(SCRIPTS)/cluster-up.sh

.PHONY: prometheus-up
prometheus-up: tools-prometheus cluster-up ## Prometheus on 127.0.0.1:9090 scraping the model servers' pods
	$(SCRIPTS)/prometheus-up.sh

.PHONY: gateway-up
gateway-up: install tools-gateway cluster-up ## Contour + Envoy on the host, a Gateway on 127.0.0.1:18080 (docs/testing.md)
	$(SCRIPTS)/gateway-up.sh

.PHONY: gateway-down
gateway-down: ## Stop Contour and Envoy (the cluster and the Gateway's objects stay)
	$(SCRIPTS)/gateway-down.sh

.PHONY: cluster-down
cluster-down: ## Stop the local control plane and remove its state
	$(SCRIPTS)/cluster-down.sh

.PHONY: cluster-status
cluster-status: ## Say what runs and where the logs are
	$(SCRIPTS)/cluster-status.sh

.PHONY: crds
crds: install ## Regenerate the CRD (crds/, manifests/crd.yaml, the chart's files/) from the pydantic models
	$(PY) -m modeldeploy.api.crdgen --write

.PHONY: manifests
manifests: tools ## Render manifests/ (all but crd.yaml) from the Helm chart with its default values
	$(SCRIPTS)/render-manifests.sh

.PHONY: test
# The unit tests render the chart with helm (`tools`); the end-to-end tests also start Prometheus, Argo CD and the
# gateway, built after the unit tests (a cold build: 10-20 minutes for the control plane, 5-13 for Prometheus, 6+
# for Argo CD, 5 for Contour). `-m "not prometheus"` runs the end-to-end tests without Prometheus.
test: install tools ## Run every test: unit and runtime, then end-to-end on the local control plane
	$(PY) -m pytest tests/unit tests/runtime
	$(SCRIPTS)/build-tools.sh prometheus argocd gateway
	$(PY) -m pytest tests/e2e --durations=25

.PHONY: test-unit
test-unit: install ## Run the unit and runtime tests only (no cluster)
	$(PY) -m pytest tests/unit tests/runtime

.PHONY: test-e2e
test-e2e: install tools tools-prometheus ## Run the end-to-end tests on the local control plane
	$(PY) -m pytest tests/e2e --durations=25

.PHONY: lint
lint: install ## ruff, mypy (strict) and the import contracts between layers (pyproject.toml, [tool.importlinter])
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-cache

.PHONY: fmt
fmt: install ## Format and fix what ruff can
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

.PHONY: demo
demo: install cluster-up ## Control plane + operator + an example rollout
	$(SCRIPTS)/demo.sh

.PHONY: chaos
# About an hour in all: the soak (R10) alone is 30 minutes after a warm-up. R8 starts Prometheus when none runs.
chaos: install cluster-up tools-prometheus ## The failure suite: every case, full size, a random seed; prints figures and goals
	$(PY) -m modeldeploy_testkit.chaos

.PHONY: bench-cluster
bench-cluster: install cluster-up ## Baseline: warm cluster-up time and 1,000 bare Deployments until Available
	$(PY) -m modeldeploy_testkit.bench cluster

.PHONY: bench
bench: install cluster-up tools-prometheus ## Operator benchmarks on the local control plane (prints figures and goals)
	$(PY) -m modeldeploy_testkit.bench
