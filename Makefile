# The few commands this project needs. `make help` lists them.
PY ?= python

.PHONY: help install test test-fast lint format fixtures notebooks bench ci

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

install:  ## editable install with every extra used in development
	$(PY) -m pip install -e '.[test,reference,hub,notebooks,jax,bench]' ruff

test:  ## the whole suite (live parity tests run when torch + transformers are installed)
	$(PY) -m pytest

test-fast:  ## skip the slow and the live-reference tests
	$(PY) -m pytest -m "not slow and not reference"

lint:  ## ruff lint + format check
	ruff check . && ruff format --check .

format:  ## ruff format + autofix
	ruff format . && ruff check --fix .

fixtures:  ## regenerate the HF reference fixtures (needs the reference extra)
	$(PY) tests/generate_fixtures.py

notebooks:  ## execute notebooks/*.py and write the .ipynb with outputs
	$(PY) tools/build_notebooks.py

bench:  ## benchmarks against HF transformers (needs the reference extra)
	$(PY) bench/bench_model.py && $(PY) bench/bench_memory.py && $(PY) bench/bench_tokenizer.py

ci:  ## what CI runs
	bash .ci/run
