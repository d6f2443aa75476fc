# The README's commands. Everything a fresh machine needs is installed from here.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: demo test quick install bench clean
SUDO        := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
DEMO_EPOCHS ?= 30
DEMO_RUN    ?= runs/demo

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,export]'
	touch $(STAMP)

install: $(STAMP)

## make demo: set up, find (or install) Fashion-MNIST offline, train a VAE, show where the pictures are
demo: $(STAMP)
	@$(PY) -c "import kvae.data as d; d.load('fashion_mnist')" >/dev/null 2>&1 || { \
	  echo "Fashion-MNIST not found offline: installing Debian's dataset-fashion-mnist"; \
	  $(SUDO) apt-get update -qq && $(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist; }
	$(VENV)/bin/kvae train --dataset fashion_mnist --epochs $(DEMO_EPOCHS) --out $(DEMO_RUN) --force

## make test: create the environment, install kvae with its test and export extras, run the suite
test: $(STAMP)
	$(PY) -m pytest -q --durations=15

## make quick: the suite without the multi-process tests
quick: $(STAMP)
	$(PY) -m pytest -q -m "not slow" -x

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache

## make bench: the throughput benchmark against the PyTorch reference (installs torch==2.13.0 CPU)
bench: $(STAMP)
	$(PY) -m pip install --quiet -e '.[bench]'
	$(PY) bench/throughput.py
