# One-command setup: every target installs what it needs, idempotently.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMPS := .stamps
APT_PACKAGES := fluidsynth fluid-soundfont-gm timgm6mb-soundfont musescore-general-soundfont-small musescore-general-soundfont csound-soundfont libsndfile1 chromium iproute2 util-linux postgresql
UV_VERSION := 0.13.9
WEIGHTS ?= .weights
DEMO_ROOT ?= ./reinstrument-data/demo
# No telemetry from the Prefect API (this machine has no route out; it would only log errors).
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false

.PHONY: setup apt venv test test-fast demo bench bench-gpu gpu-wheels lock clean help

help:  ## list targets
	@grep -E '^[a-z-]+:.*##' Makefile | sed 's/:.*##/\t/'

setup: $(STAMPS)/apt $(STAMPS)/venv $(STAMPS)/weights  ## Debian packages, virtualenv with the locked packages, metric weights

$(STAMPS)/apt:
	@mkdir -p $(STAMPS)
	@if dpkg -s $(APT_PACKAGES) >/dev/null 2>&1; then echo "apt: packages present"; else \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $(APT_PACKAGES) >/dev/null; fi
	@touch $@

# --compile-bytecode: shells here export PYTHONDONTWRITEBYTECODE=1, so without .pyc written at
# install time every process (tests, Ray workers, Prefect) recompiles what it imports from source
# (import torch+pyarrow+pandas: 3.8 s -> 1.9 s, measured).
$(STAMPS)/venv: requirements.lock pyproject.toml
	@mkdir -p $(STAMPS)
	@command -v uv >/dev/null 2>&1 || $(PYTHON) -m pip install -q "uv==$(UV_VERSION)"
	@[ -x $(PY) ] || uv venv -q --python $(PYTHON) $(VENV)
	uv pip install -q --python $(PY) --compile-bytecode -r requirements.lock
	uv pip install -q --python $(PY) --no-deps -e .
	@touch $@

# musicnn and Basic Pitch weights, read from their wheels (hash-pinned in weights.lock).
$(STAMPS)/weights: weights.lock
	@mkdir -p $(STAMPS) $(WEIGHTS)/wheels
	$(PYTHON) -m pip download -q --no-deps --require-hashes -r weights.lock -d $(WEIGHTS)/wheels
	cd $(WEIGHTS) && for w in wheels/musicnn-0.1.0-*.whl wheels/basic_pitch-0.4.0-*.whl; do $(PYTHON) -m zipfile -e $$w .; done
	@touch $@

lock:  ## re-resolve requirements.in into requirements.lock (records no index host)
	uv pip compile requirements.in -o requirements.lock --python-version 3.11 --python-platform x86_64-manylinux_2_28 --no-header

# One pytest process: two workers (pytest-xdist -n 2, one file each) were measured slower on 2
# cores, 35.5 min against 31.4 (user time 48 min against 31): their torch and Ray threads contend.
test: setup  ## run the whole suite (unit, integration with real local services, e2e)
	$(PY) -m pytest -q -p no:cacheprovider --durations=40 tests --ignore=tests/benchmarks

test-fast: setup  ## unit tests only
	$(PY) -m pytest -q tests/unit

demo: setup  ## held-out fiddle tunes (performed) -> shipped models into MLflow -> sweep-t-init violin->flute; table + report path
	$(VENV)/bin/reinstrument demo --out $(DEMO_ROOT)

bench: setup  ## throughput benchmarks (ratios measured side by side in one run)
	$(PY) -m pytest -q -s tests/benchmarks

# A lent GPU machine has Python 3.12 with torch, numpy, scipy, numba, pyarrow, but none of these
# (and no network): `make gpu-wheels` fetches them here, pinned as in requirements.lock, and the
# machine installs them from .whl/ (carried with the tree).
GPU_WHEELS := $(shell grep -iE '^(pydantic|pydantic-core|annotated-types|typing-inspection|librosa|audioread|decorator|pooch|platformdirs|soxr|soundfile|cffi|pycparser|pyloudnorm)==' requirements.lock)
gpu-wheels:  ## (with network) the pure-Python packages bench-gpu needs on a lent GPU machine, into .whl/
	python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
	  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
	  -d .whl $(GPU_WHEELS)

bench-gpu:  ## GPU figures in <= 5 min, no network: bf16 training MFU (denoiser, vocoder, autoencoder), transform, DDP
	@P=$$( [ -x $(PY) ] && echo $(PY) || echo python3 ); \
	if ! $$P -c "import pydantic, librosa, soundfile" 2>/dev/null && [ -d .whl ]; then \
	  $$P -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site; fi; \
	PYTHONUNBUFFERED=1 timeout 300 $$P tests/benchmarks/bench_gpu.py

clean:  ## remove the virtualenv and demo data
	rm -rf $(VENV) $(STAMPS) ./reinstrument-data
