# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv if missing.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
DEMO    ?= demo

.PHONY: install test test-all demo bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch first, by exact version (the local CPU wheel), then everything else under the same
# pin: without the constraint a dependency asks for a newer torch and pulls GBs of CUDA wheels.
$(STAMP): $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

test: install
	$(BIN)/python -m pytest -q

demo: install
	$(BIN)/pks synth $(DEMO)/footage --videos 4 --seed 1
	$(BIN)/pks curate $(DEMO)/footage $(DEMO)/run
	@echo "PKS demo done: footage in $(DEMO)/footage, manifest in $(DEMO)/run/manifest.parquet"

bench: install
	$(BIN)/python benchmarks/shots.py
	$(BIN)/python benchmarks/analysis.py

clean:
	rm -rf $(VENV) $(DEMO) .pytest_cache
