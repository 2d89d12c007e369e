# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed

.PHONY: setup demo test test-batch test-integration test-browser benchmark mutation clean

$(INSTALLED): requirements.txt requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt -e .
	touch $@

setup: $(INSTALLED)

demo: $(INSTALLED)
	$(PY) -m comfyui_text2video run example_workflows/text2video.json

test: $(INSTALLED)
	$(PY) -m pytest -q tests

# The batch tests, with the two-"machine" accelerate launch on this host that `make test` skips (about a minute more).
test-batch: $(INSTALLED)
	T2V_TEST_MULTINODE=1 $(PY) -m pytest -q tests/test_batch.py

# A real ComfyUI server with the pack installed: needs a ComfyUI checkout and its interpreter (with the pack's
# requirements.txt installed): COMFYUI_DIR=... COMFYUI_PYTHON=... make test-integration
# `make test` runs these tests too when both variables are set, and skips them (saying why) otherwise.
test-integration: $(INSTALLED)
	@test -n "$(COMFYUI_DIR)" -a -n "$(COMFYUI_PYTHON)" || \
		{ echo "make test-integration: set COMFYUI_DIR and COMFYUI_PYTHON" >&2; exit 2; }
	$(PY) -m pytest -q tests/integration

# The editor in headless Chromium on a real ComfyUI (same two variables; needs a `chromium` executable).
test-browser: $(INSTALLED)
	@test -n "$(COMFYUI_DIR)" -a -n "$(COMFYUI_PYTHON)" || \
		{ echo "make test-browser: set COMFYUI_DIR and COMFYUI_PYTHON" >&2; exit 2; }
	$(PY) -m pytest -q tests/browser

benchmark: $(INSTALLED)
	$(PY) benchmarks/text2video.py

# Mutation check (slow, not part of `make test` or CI): mutmut mutates samplers/, attention/, models/loading.py and
# media/video_io.py in a copy of the pack and runs the fast tests that reach each mutant, in .mutation/ (see
# tests/mutmut.cfg); the survivors per module go to .mutation/mutants/report.txt. MUTANTS='*.samplers.loop.*' limits
# a run to one module (results accumulate), MUTATION_JOBS sets the parallel workers. Known equivalent survivors:
# tests/MUTATION.md.
MUTANTS ?=
MUTATION_JOBS ?= 2
mutation: $(INSTALLED)
	mkdir -p .mutation
	ln -sfn .. .mutation/comfyui_text2video
	ln -sfn ../tests .mutation/tests
	cp tests/mutmut.cfg .mutation/setup.cfg
	cd .mutation && OMP_NUM_THREADS=1 nice $(abspath $(VENV))/bin/mutmut run --max-children $(MUTATION_JOBS) $(MUTANTS)
	cd .mutation && $(abspath $(PY)) ../tests/mutation_report.py | tee mutants/report.txt

clean:
	rm -rf $(VENV) build *.egg-info .mutation
