# temporal-build-worker: `make run` to run the worker, `make test` to run every test, `make unit`
# the tests that need no server.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TOOLS := .test-tools

.PHONY: run test unit venv lint demo bench deploy-check clean

# Idempotent: reinstalls only when a requirements file changed.
venv: $(STAMP)
$(STAMP): requirements.txt requirements-dev.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@touch $(STAMP)

# Runs the worker in the foreground; starts an embedded dev server when nothing answers
# at TEMPORAL_ADDRESS. Ctrl-C stops both.
run: venv
	$(PY) worker.py --dev-server $(RUN_ARGS)

# Before `pm2 reload`: replays every open pipeline and plan on the server the worker's settings
# name (this shell's environment, as for `pm2 start`) on this checkout's workflow code. Exit 0
# when all replay; 1 names each run that would break (docs/OPERATIONS.md, "Deploying new code").
deploy-check: venv
	$(PY) worker.py --check-open-runs

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# The tests marked unit, which need no server, in seconds: the loop while editing. A unit test
# that asks for a server fixture fails (tests/conftest.py); `make test` runs these too.
unit: venv
	$(PY) -m pytest -q -m "unit and not slow" $(PYTEST_ARGS)

demo: venv
	$(PY) -m examples.demo

bench: venv
	$(PY) -m bench.run $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .temporal $(TOOLS) .mypy_cache .ruff_cache .pytest_cache

# Servers and tools the tests need beyond the venv (Synapse, PM2, ...). Each block adds its
# stamp file to TEST_TOOLS, above the `test` rule, so a fresh machine gets it from `make test`.
TEST_TOOLS :=

# Synapse, the Matrix homeserver tests/test_matrix.py posts to, in a virtual environment of its
# own so its pins never meet the worker's.
SYNAPSE_VENV := $(TOOLS)/synapse
SYNAPSE_SPEC := matrix-synapse>=1.140,<2
SYNAPSE_STAMP := $(SYNAPSE_VENV)/.installed
$(SYNAPSE_STAMP):
	@test -x $(SYNAPSE_VENV)/bin/python || $(PYTHON) -m venv $(SYNAPSE_VENV)
	$(SYNAPSE_VENV)/bin/python -m pip install --quiet --disable-pip-version-check '$(SYNAPSE_SPEC)'
	@touch $@
TEST_TOOLS += $(SYNAPSE_STAMP)

# PM2 from npm for tests/test_pm2.py, local to the checkout (never `npm -g`).
PM2_DIR := $(TOOLS)/pm2
PM2_SPEC := pm2@7
PM2_STAMP := $(PM2_DIR)/.installed
$(PM2_STAMP):
	npm install --prefix $(PM2_DIR) --no-audit --no-fund --loglevel=error '$(PM2_SPEC)'
	@touch $@
TEST_TOOLS += $(PM2_STAMP)

# ---- keep the test rule last: its prerequisites are read when make parses it ----
test: venv lint $(TEST_TOOLS)
	$(PY) -m pytest -q -rs $(PYTEST_ARGS)
