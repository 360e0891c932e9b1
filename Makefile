# Two commands on a fresh machine:
#   make repro   set up .venv and run the whole pipeline (fetch -> split -> train -> evaluate)
#   make test    set up .venv with the test tools and run the whole test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: repro test setup setup-dev browser bench clean-venv

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

# The report test opens reports/index.html in Debian's chromium. Installed when we may (root or
# passwordless sudo); otherwise that one test skips and says why.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  as_root=""; [ "$$(id -u)" = 0 ] || as_root="sudo -n"; \
	  { $$as_root apt-get update -qq && $$as_root env DEBIAN_FRONTEND=noninteractive \
	      apt-get install -y -qq --no-install-recommends chromium >/dev/null; } \
	  || echo "make: chromium could not be installed; the headless-browser test will skip" >&2; }

# -n auto: one pytest worker per core (at most 8). A project that many tests share is built once, by
# the first worker that asks; the longest units start first (tests/conftest.py, binsight/testing/units.py).
test: setup-dev browser
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -q -n auto --maxprocesses 8 tests

bench: setup-dev
	$(BIN)/python bench/fetch.py

clean-venv:
	rm -rf $(VENV)
