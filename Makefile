# Two entry points for a fresh machine: `make demo` and `make test`.
# Both create .venv when it is missing and install the package into it (editable, with dev extras).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.xprospect-installed

.PHONY: demo test lint typecheck pytest bench clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/xprospect demo --output demo_output

# The architecture (docs/architecture.md) is part of lint: import-linter's layer, no-cycle and
# private-module contracts (setup.cfg), and no private name imported across modules.
lint: $(STAMP)
	$(BIN)/ruff check xprospect tests scripts benchmarks
	$(BIN)/ruff format --check xprospect tests scripts benchmarks
	$(BIN)/lint-imports --no-cache
	$(BIN)/python scripts/check_private_imports.py xprospect

typecheck: $(STAMP)
	$(BIN)/mypy

# Two workers (pytest-xdist), one test file each at a time: the tests are mostly Python-bound
# graph tracing, which a second process runs in parallel on the second core.
pytest: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadfile --durations=25

test: lint typecheck pytest

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_io.py
	$(BIN)/python benchmarks/bench_drr.py
	$(BIN)/python benchmarks/bench_data.py
	$(BIN)/python benchmarks/bench_train.py --steps 3
	$(BIN)/python benchmarks/bench_models.py
	$(BIN)/python benchmarks/bench_style.py
	$(BIN)/python benchmarks/bench_serving.py

clean:
	rm -rf $(VENV) demo_output .pytest_cache .mypy_cache .ruff_cache
