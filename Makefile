# `make train` runs the main job on SynthCue; `make test` runs the suite. Each creates .venv first.
VENV ?= .venv
PY := $(VENV)/bin/python
WORKDIR ?= workdirs/main
TRAIN_CONFIG ?= configs/unitalking/tiny.py
TRAIN_MODULE ?= unitalking_jax.train
PYTEST_ARGS ?=
TEST_WORKERS ?= 2   # pytest-xdist processes (compiles are single-threaded: 2 workers on 2 cores ~halve the time)
TRAIN_ARGS ?=

.PHONY: venv train test bench clean

venv: $(VENV)/.installed

$(VENV)/.installed: setup.py
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first: the local CPU build, so nothing pulls CUDA wheels
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test]'
	# FunASR: the SANM parity oracle; --no-deps: its modules build offline with torch, numpy and pyyaml
	$(PY) -m pip install -q --no-deps funasr==1.4.16
	# BigVGAN: NVIDIA's own package, the BigVGAN parity oracle and the release's PyTorch vocoder; --no-deps: its
	# training deps (pesq, nnaudio) are not needed, import needs torch, huggingface_hub, librosa, matplotlib, scipy, tqdm
	$(PY) -m pip install -q --no-deps bigvgan==2.4.1
	touch $@

train: venv
	$(PY) -m $(TRAIN_MODULE) --config $(TRAIN_CONFIG) --workdir $(WORKDIR) $(TRAIN_ARGS)

test: venv
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS) tests

bench: venv
	for f in benchmarks/*.py; do $(PY) $$f || exit 1; done

clean:
	rm -rf $(VENV) workdirs
