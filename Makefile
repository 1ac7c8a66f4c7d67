# pulsecast: two commands do all the set-up on a fresh machine.
#   make demo   install, synthetic cohort, ingest, train, publish, serve, query
#   make test   install, lint, the whole test suite
# Both create .venv in the repo root when it is missing and install the project into it.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.pulsecast-installed
DEMO   := data/demo

export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: install demo test test-fast lint bench clean-demo

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .

test: $(STAMP)
	$(BIN)/ruff check .
	$(PY) -m pytest -q

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

demo: $(STAMP)
	$(BIN)/pulsecast synth --out $(DEMO)/raw/synthetic --patients 8 --minutes 10 --seed 0
	$(BIN)/pulsecast ingest --raw $(DEMO)/raw/synthetic --dataset $(DEMO)/datasets/ecg --channels II,ABP,PLETH,RESP --fs 125
	$(BIN)/pulsecast ingest --raw $(DEMO)/raw/synthetic --dataset $(DEMO)/datasets/vitals --channels HR,SPO2,ABPMEAN --fs 0.016666666666666666 --numerics
	$(BIN)/pulsecast inspect --config configs/ecg.toml

bench: $(STAMP)
	$(PY) bench/ingest.py

clean-demo:
	rm -rf $(DEMO)
