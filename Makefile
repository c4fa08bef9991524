PYTHON ?= python3
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TRANSFORMERS_NO_ADVISORY_WARNINGS := 1

.PHONY: install test bench nightly

# torch first, pinned to the CPU wheel, so the package's torch range never pulls CUDA builds.
install:
	$(PYTHON) -m pip install -q torch==2.13.0
	$(PYTHON) -m pip install -q -e ".[test]"
	# the reference PQ implementation; its metadata pins numpy<2, which it does not need
	$(PYTHON) -m pip install -q --no-deps "panopticapi-lite>=0.2"

test: install
	$(PYTHON) -m pytest -q --durations=15

bench: install
	$(PYTHON) -m pytest -q -m slow --durations=15
	$(PYTHON) bench/bench_forward.py

nightly: bench
