# Two entry points for a fresh machine: `make demo` (the main job) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CONFIG ?= small
WORKDIR ?= runs/shakespeare_$(CONFIG)

.PHONY: demo test test-e2e test-slow sample reproduce reproduce-quick clean-venv

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,app]'
	touch $@

## Train the Shakespeare Transformer on the embedded corpus, then sample from it.
demo: $(BIN)/.installed
	$(BIN)/p2t train --config configs/shakespeare.py:$(CONFIG) --workdir $(WORKDIR)
	$(BIN)/p2t sample --workdir $(WORKDIR) --prompt "ROMEO:" --max-new-tokens 300 \
		--temperature 0.8 --top-k 40 --seed 0

## Install the test and app extras, lint, and run the suite (tests marked slow are left to `make test-slow`, the
## end-to-end checks marked e2e to `make test-e2e`, which CI runs after this).
## Two workers, each test file whole on one of them (a module's fixtures are built once), the longest files first
## (tests/conftest.py: SLOWEST_FILES), then the ten slowest tests.
test: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder -m "not slow and not e2e" --durations=10

## The end-to-end checks: every playground page in a real browser, docs/extending.md run as written, the SIGHUP and
## SIGKILL random-moment trials. CI (.ci/run) runs them after `make test`.
test-e2e: $(BIN)/.installed
	$(BIN)/python -m pytest -q -n 2 --dist loadfile -m "e2e and not slow" --durations=5

## The slow tests: many real signals at random moments (tests/test_faults.py), longer training checks.
test-slow: $(BIN)/.installed
	$(BIN)/python -m pytest -q -m slow

## Every chapter's experiment at its full budget into runs/reproduce/REPORT.md and report.html (resumable).
reproduce: $(BIN)/.installed
	$(BIN)/p2t reproduce --budget full --out runs/reproduce

## The same at the quick budget (small runs, labelled quick): runs/reproduce_quick, what the playground can read.
reproduce-quick: $(BIN)/.installed
	$(BIN)/p2t reproduce --budget quick --out runs/reproduce_quick

clean-venv:
	rm -rf $(VENV)
