# Two commands on a fresh machine:
#   make repro   set up .venv and run the whole pipeline (fetch -> split -> train -> evaluate)
#   make test    set up .venv with the test tools, run ruff and the whole test suite, mypy included (what .ci/run runs)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# columns `make exps` hides: the creation time and every dependency (paths), so the table fits 120 columns
EXP_HIDDEN := Created|.*/|.*[.]json$$

.PHONY: repro test test-fast style lint format exps setup setup-dev browser bench clean-venv

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: requirements.txt pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -r requirements.txt
	$(BIN)/pip install -q --no-deps -e .
	touch $@

$(VENV)/.installed-dev: requirements.txt requirements-dev.txt pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -r requirements-dev.txt
	$(BIN)/pip install -q --no-deps -e .
	touch $(VENV)/.installed $@

setup: $(VENV)/.installed
setup-dev: $(VENV)/.installed-dev

repro: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" dvc repro

# The report and `dvc plots show` tests open their pages in Debian's chromium. Installed when we may (root
# or passwordless sudo); otherwise those tests skip and say why.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  as_root=""; [ "$$(id -u)" = 0 ] || as_root="sudo -n"; \
	  { $$as_root apt-get update -qq && $$as_root env DEBIAN_FRONTEND=noninteractive \
	      apt-get install -y -qq --no-install-recommends chromium >/dev/null; } \
	  || echo "make: chromium could not be installed; the headless-browser tests will skip" >&2; }

# The whole suite, as CI runs it: lint and format checks, then every test (-m "" lifts the fast-tier filter of
# pyproject.toml) on one pytest worker per core, at most 8: the dvc, git and stage processes the tests start
# keep the cores busy while a worker waits on them, and a spare worker only adds CPU (workers fighting over
# the caches; on 2 cores, 3 workers did ~12 % more CPU work and finished later than 2). The
# type check is one of those tests (tests/test_types.py), so it runs beside the others instead of before them.
# --dist loadgroup keeps the tests that share an expensive module fixture (a started server, a fetched project)
# on one worker.
WORKERS := $(shell $(PYTHON) -c 'import os; print(min(8, os.cpu_count() or 1))')
test: setup-dev browser style
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -q -m "" -n $(WORKERS) --dist loadgroup \
	  --no-loadscope-reorder

# The fast tier while you work: pure logic and stages called in-process, under a minute.
test-fast: setup-dev
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -q

style: setup-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

lint: style
	$(BIN)/mypy

format: setup-dev
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# `dvc exp show` cut to what a 120-column terminal can show: the headline metrics, then the params that
# differ between the experiments (no dependency hashes).
exps: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" dvc exp show --no-pager --only-changed --drop '$(EXP_HIDDEN)' $(EXPS_ARGS)

bench: setup-dev
	$(BIN)/python -m bench.fetch

clean-venv:
	rm -rf $(VENV)
