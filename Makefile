# The two commands: `make dev` runs the whole system, `make test` passes the tests.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: dev test install gen check-gen lint format typecheck imports buf-lint unit workflow integration e2e clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## Regenerate gen/ from protos/ (the only way gen/ changes).
gen: install
	$(PY) -m oms_platform.codegen

check-gen: install
	$(PY) -m oms_platform.codegen --check

## Start Postgres, Temporal (with UI), the four services, a worker and the warehouse simulator.
dev: install check-gen
	$(BIN)/oms dev

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

typecheck: install
	$(BIN)/mypy oms_platform oms_tools services workflows

## The layers and purity rules of pyproject.toml's [tool.importlinter].
imports: install
	$(BIN)/lint-imports

buf-lint: install
	cd protos && ../$(BIN)/buf lint

unit: install
	$(BIN)/pytest -q tests/unit

workflow: install
	$(BIN)/pytest -q tests/workflow

integration: install
	$(BIN)/pytest -q tests/integration

e2e: install
	$(BIN)/pytest -q tests/e2e

## Static checks first (fast), then every test tier.
# Each run gets a temporary directory of its own: pytest prunes old ones by age, which would
# pull the data directories out from under another run on the same machine. Two pytest
# workers (pytest-xdist), each with its own Postgres, Temporal and stacks, a test file at a
# time: the end-to-end tests spend most of their time waiting (a cadence, arrivals, a killed
# process coming back), so two at once take about a third less time on two cores.
test: install check-gen buf-lint lint typecheck imports
	base=$$(mktemp -d /tmp/oms-test.XXXXXX) && $(BIN)/pytest -q -p no:cacheprovider -n 2 --dist loadfile --durations=25 --basetemp=$$base tests; status=$$?; rm -rf $$base; exit $$status

clean:
	rm -rf $(VENV) .oms build *.egg-info
