# The two commands of the README: `make demo` and `make test`. Both set everything up first.
VENV ?= $(or $(FRAUDGRAPH_VENV),$(or $(XDG_CACHE_HOME),$(HOME)/.cache)/fraudgraph/venv)

.PHONY: setup demo test unit lint bench stack-up stack-down
setup:
	bash stack/setup.sh

demo: setup
	$(VENV)/bin/fraudgraph demo

# What CI runs: lint, then every test (slow and integration ones too, on the real local stack).
test: setup lint
	$(VENV)/bin/python -m pytest

bench: setup
	$(VENV)/bin/pip install -q -e '.[bench]'
	$(VENV)/bin/python benchmarks/bench.py $(BENCH_ARGS)

# The quick loop: no stack, no slow training runs, one test process per core (pytest-xdist).
unit: setup
	$(VENV)/bin/python -m pytest -m "not integration and not slow" -n auto

# The repository root is the fraudgraph package, so mypy checks it through a link of that name.
TYPECHECK := $(VENV)/typecheck
lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	mkdir -p $(TYPECHECK) && ln -sfn $(CURDIR) $(TYPECHECK)/fraudgraph
	cd $(TYPECHECK) && $(VENV)/bin/mypy --config-file $(CURDIR)/pyproject.toml -p fraudgraph

stack-up: setup
	$(VENV)/bin/fraudgraph stack up

stack-down:
	$(VENV)/bin/fraudgraph stack down
