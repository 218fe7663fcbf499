# Two commands do all set-up: `make run` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test install organisms clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# torch is pinned first to the CPU build that lies on disk, so no install pulls a CUDA build.
$(STAMP): $(PY) pyproject.toml
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# benchmarks/peers.py's peers, pinned, with --no-deps: steering-vectors pins transformers<5 and repeng numpy<2
# (and imports gguf); the calls the benchmark makes need neither pin (see benchmarks/README.md, "Peers").
PEERS := $(VENV)/.peers-installed
$(PEERS): $(STAMP)
	$(PY) -m pip install -q --no-deps steering-vectors==0.12.2 repeng==0.4.0 gguf==0.19.0
	touch $(PEERS)

run: $(STAMP)
	$(PY) experiments/replicate.py

organisms: $(STAMP)
	$(PY) experiments/build_organisms.py

# One pytest worker per core (pytest-xdist), a test file per worker at a time so module fixtures are built once.
test: $(STAMP) $(PEERS)
	$(PY) -m pytest -q -n auto --dist loadfile

# emis against raw PyTorch baselines (several minutes on CPU); BENCH_ARGS="--quick" for a smoke run.
.PHONY: bench
bench: $(STAMP)
	$(PY) benchmarks/run.py $(BENCH_ARGS)

# emis against steering-vectors and repeng (about 15 min on CPU); BENCH_ARGS="--quick" for a smoke run.
.PHONY: bench-peers
bench-peers: $(PEERS)
	$(PY) benchmarks/peers.py $(BENCH_ARGS)

clean:
	rm -rf outputs multirun
