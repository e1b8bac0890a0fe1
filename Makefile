# `make test` and `make demo` bootstrap .venv themselves on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
BACKENDS ?= tensorflow jax torch
PYTEST_ARGS ?= --durations=25

.PHONY: all venv test lint wheel-check demo bench clean

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

# The wheel, installed in a fresh environment outside the checkout, runs the command line.
wheel-check: $(VENV)/.installed
	PY=$(abspath $(PY)) .ci/check_wheel

# The built-in number-words corpus, English -> German: train, score, export, check.
DEMO_BACKEND ?= jax
DEMO_WORKDIR ?= runs/number-words-en-de
DEMO_EXPORT ?= saved_models/number-words-en-de
KT := TF_CPP_MIN_LOG_LEVEL=3 $(PY) -m keras_transformer_cli

demo: $(VENV)/.installed
	$(KT) train --backend $(DEMO_BACKEND) --corpus number-words:de --workdir $(DEMO_WORKDIR) \
	  --preset tiny --vocab-size 1000 --set hidden_dim=128 --set intermediate_dim=512 \
	  --set warmup_steps=1000 --set max_tokens=2048 --epochs 4 --checkpoint-every 250 \
	  --average-last 3
	$(KT) evaluate --backend $(DEMO_BACKEND) --workdir $(DEMO_WORKDIR) --corpus number-words:de \
	  --examples 5
	$(KT) export --workdir $(DEMO_WORKDIR) --out $(DEMO_EXPORT) --check \
	  --check-text "forty-two thousand, one hundred and seven" \
	  --check-text "nine hundred and ninety-nine"

bench: $(VENV)/.installed
	$(PY) benchmarks/train_throughput.py

clean:
	rm -rf $(VENV) .pytest_cache
