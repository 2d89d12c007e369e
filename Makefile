# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed

.PHONY: setup demo test test-integration benchmark clean

$(INSTALLED): requirements.txt requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt -e .
	touch $@

setup: $(INSTALLED)

demo: $(INSTALLED)
	$(PY) -m comfyui_text2video run example_workflows/text2video.json

test: $(INSTALLED)
	$(PY) -m pytest -q

# Needs a ComfyUI checkout and its interpreter: COMFYUI_DIR=... COMFYUI_PYTHON=... make test-integration
test-integration: $(INSTALLED)
	$(PY) -m pytest -q tests/integration -m integration

benchmark: $(INSTALLED)
	$(PY) benchmarks/text2video.py

clean:
	rm -rf $(VENV) build *.egg-info
