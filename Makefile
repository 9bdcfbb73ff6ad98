# The two commands of the README: `make demo` and `make test`. Both set everything up first.
VENV ?= $(or $(FRAUDGRAPH_VENV),$(or $(XDG_CACHE_HOME),$(HOME)/.cache)/fraudgraph/venv)

.PHONY: setup demo test unit bench stack-up stack-down
setup:
	bash stack/setup.sh

demo: setup
	$(VENV)/bin/fraudgraph demo

test: setup
	$(VENV)/bin/python -m pytest

bench: setup
	$(VENV)/bin/pip install -q -e '.[bench]'
	$(VENV)/bin/python benchmarks/bench.py $(BENCH_ARGS)

unit: setup
	$(VENV)/bin/python -m pytest -m "not integration"

stack-up: setup
	$(VENV)/bin/fraudgraph stack up

stack-down:
	$(VENV)/bin/fraudgraph stack down
