# schemacache — the two commands: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test demo lint typecheck bench chaos clean venv

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/schemacache up --nodes 3 --data-dir ./var

demo: $(STAMP)
	$(BIN)/schemacache demo

test: $(STAMP)
	sh scripts/install-promtool.sh
	sh scripts/install-chromium.sh
	sh scripts/install-strace.sh
	$(BIN)/python -m pytest -q -p no:cacheprovider

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy src

bench: $(STAMP)
	$(BIN)/python bench/run.py

# The chaos harness's long run (etcd, then SQLite; about 12 minutes); the short
# run is part of make test (tests/test_chaos.py).
chaos: $(STAMP)
	$(BIN)/python bench/chaos.py

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
