# pulsecast: two commands do all the set-up on a fresh machine.
#   make demo   install, synthetic cohort, ingest, train, publish, serve, query
#   make test   install, lint, the whole test suite (fixed fuzz examples: the same every run)
#   make fuzz   the fuzzers only, new random examples each run, 5x as many (finds new bugs)
# Both create .venv in the repo root when it is missing and install the project into it.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.pulsecast-installed

.PHONY: install demo test test-fast fuzz lint bench clean-demo

$(STAMP): pyproject.toml models/fused_lstm_op.cc
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev,scale]"
	$(PY) -m models.fused_lstm
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .

test: $(STAMP)
	$(BIN)/ruff check .
	$(PY) -m pytest -q

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

fuzz: $(STAMP)
	HYPOTHESIS_PROFILE=fuzz PULSECAST_FUZZ_SCALE=$${PULSECAST_FUZZ_SCALE:-5} \
		$(PY) -m pytest -q tests/test_fuzz_ingest.py tests/test_fuzz_rest.py \
		tests/test_fuzz_grpc.py

demo: $(STAMP)
	$(BIN)/pulsecast demo --root data --config configs/ecg.toml --epochs 16

bench: $(STAMP)
	$(PY) bench/ingest.py

clean-demo:
	rm -rf data/raw/synthetic data/datasets/ecg data/datasets/vitals data/model_store/ecg runs/ecg
