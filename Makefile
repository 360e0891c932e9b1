# Two commands on a fresh machine:
#   make repro   set up .venv and run the whole pipeline (fetch -> split -> train -> evaluate)
#   make test    set up .venv with the test tools and run the whole test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: repro test setup setup-dev bench clean-venv

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: requirements.txt | $(BIN)/python
	$(BIN)/pip install -q -r requirements.txt
	touch $@

$(VENV)/.installed-dev: requirements.txt requirements-dev.txt | $(BIN)/python
	$(BIN)/pip install -q -r requirements-dev.txt
	touch $(VENV)/.installed $@

setup: $(VENV)/.installed
setup-dev: $(VENV)/.installed-dev

repro: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" dvc repro

test: setup-dev
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -q tests

bench: setup-dev
	$(BIN)/python bench/fetch.py

clean-venv:
	rm -rf $(VENV)
