# The README's commands. Everything a fresh machine needs is installed from here.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: test quick install bench clean

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## make test: create the environment, install kvae with its test extras, run the suite
test: $(STAMP)
	$(PY) -m pytest -q

## make quick: the suite without the multi-process tests
quick: $(STAMP)
	$(PY) -m pytest -q -m "not slow" -x

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache

## make bench: the throughput benchmark against the PyTorch reference (installs torch==2.13.0 CPU)
bench: $(STAMP)
	$(PY) -m pip install --quiet -e '.[bench]'
	$(PY) bench/throughput.py
