# Quickstart: `make demo` and `make test`. Both create $(VENV) on first use and reuse it after.
# Another interpreter in another environment, e.g. the newest Python with the newest JAX:
#   make test PYTHON=/root/.pyenv/versions/3.13.0/bin/python3 VENV=.venv-new
# (a fresh environment gets the newest releases that the interpreter admits; .ci/run does this).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# One stamp per set of extras: `make demo` installs only what the demo needs.
DEMO_STAMP := $(VENV)/.demo-installed
STAMP := $(VENV)/.installed
DOCS_STAMP := $(VENV)/.docs-installed

.PHONY: demo test lint lint-types bench docs versions clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(DEMO_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[demo]'
	touch $@

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test,extras,md,lint,recipes]'
	touch $@

$(DOCS_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[docs]'
	touch $@

demo: $(DEMO_STAMP)
	$(BIN)/jaxsinks demo

# The sink tests again with jax_enable_x64 (float64 simulations record to every sink).
X64_TESTS := tests/test_x64.py tests/test_zarr_sink.py tests/test_device_buffer.py tests/test_host_buffer.py \
	tests/test_csv_sink.py tests/test_record.py tests/test_transforms.py tests/test_schedule.py \
	tests/test_ragged.py tests/test_sharded.py tests/test_reader.py tests/test_misuse.py tests/test_writers.py \
	tests/test_drive.py tests/test_reserved_names.py tests/test_long_logs.py tests/test_campaign.py \
	tests/test_bad_input.py tests/test_layout.py

# The suite, then the sink tests under x64.
test: $(STAMP)
	$(BIN)/python -m pytest -n 2 -q
	JAXSINKS_TEST_X64=1 $(BIN)/python -m pytest -n 2 -q $(X64_TESTS)

# Lint, formatting and types (ruff and mypy as pinned in the lint extra; mypy checks jaxsinks/).
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# Types only: .ci/run also checks jaxsinks/ against the newest environment's jax and numpy.
lint-types: $(STAMP)
	$(BIN)/mypy

docs: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_device.py

# The versions that matter in $(VENV) (it must exist).
versions:
	@$(BIN)/python -c "import sys, importlib.metadata as m; print('$(VENV): Python ' + sys.version.split()[0], *(p + ' ' + m.version(p) for p in ('jax', 'jaxlib', 'numpy', 'zarr', 'tensorstore')), sep=', ')"

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
