# `make test` and `make demo` bootstrap .venv themselves on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
BACKENDS ?= tensorflow jax torch
PYTEST_ARGS ?=

.PHONY: all venv test lint demo bench clean

all: test

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[all]"
	touch $@

venv: $(VENV)/.installed

# One process per backend: Keras fixes its backend at import.
test: $(VENV)/.installed
	@status=0; \
	for backend in $(BACKENDS); do \
	  echo "==================== backend: $$backend ===================="; \
	  KERAS_BACKEND=$$backend $(PY) -m pytest tests $(PYTEST_ARGS) || status=1; \
	done; \
	exit $$status

lint: $(VENV)/.installed
	$(PY) -m ruff check keras_transformer tests benchmarks examples

demo: $(VENV)/.installed
	@echo "make demo: not yet -- it lands with the CLI and the built-in corpus (see README, Status)."

bench: $(VENV)/.installed
	$(PY) benchmarks/train_throughput.py

clean:
	rm -rf $(VENV) .pytest_cache
