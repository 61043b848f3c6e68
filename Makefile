# nudge: `make demo` installs everything and runs the demo; `make test` runs the tests.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test test-fast lint format bench clean

install: $(STAMP)

# Pinned versions come from constraints.txt, so a fresh machine gets the same set.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

demo: install
	$(BIN)/nudge demo

test: install
	$(BIN)/python -m pytest -n 2 -q

test-fast: install
	$(BIN)/python -m pytest -n 2 -q -m "not integration and not shared_data"

lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy src

format: install
	$(BIN)/ruff check --fix src tests benchmarks
	$(BIN)/ruff format src tests benchmarks

# lifetimes is only a yardstick for the BG/NBD fit, never a dependency: it is
# installed without its pins (they predate pandas 3) and skipped if that fails.
bench: install
	-@$(BIN)/python -m pip install --quiet --no-deps lifetimes==0.11.3 autograd==1.9.1 dill==0.4.1
	@mkdir -p benchmarks/results
	@for script in benchmarks/bench_*.py; do \
		echo "== $$script"; $(BIN)/python $$script || exit 1; \
	done

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
