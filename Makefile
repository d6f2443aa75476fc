# The README's commands. Everything a fresh machine needs is installed from here.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: demo test quick install bench clean constraints test-other-python
SUDO        := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
DEMO_EPOCHS ?= 30
DEMO_RUN    ?= runs/demo

$(STAMP): setup.cfg pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[all,dev]'
	touch $(STAMP)

install: $(STAMP)

## make demo: set up, find (or install) Fashion-MNIST offline, train a VAE, show where the pictures are
demo: $(STAMP)
	@$(PY) -c "import kvae.data as d; d.load('fashion_mnist')" >/dev/null 2>&1 || { \
	  echo "Fashion-MNIST not found offline: installing Debian's dataset-fashion-mnist"; \
	  $(SUDO) apt-get update -qq && $(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist; }
	$(VENV)/bin/kvae train --dataset fashion_mnist --epochs $(DEMO_EPOCHS) --out $(DEMO_RUN) --force

## make test: create the environment, install kvae with its test and export extras, run the suite
## (two workers, one per test file at a time: the suite is mostly single-threaded compiles,
## conversions and process start-ups, so the two cores halve its wall time)
test: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadfile --durations=15

## make quick: the suite without the multi-process tests
quick: $(STAMP)
	$(PY) -m pytest -q -m "not slow" -x

clean:
	rm -rf $(VENV) $(OTHER_VENV) build *.egg-info .pytest_cache

## make constraints: record the exact installed set (after changing setup.cfg and testing it)
constraints: $(STAMP)
	{ echo "# The exact set kvae's tests ran with (Python 3.11, Linux x86_64): \`make\` installs with -c constraints.txt."; \
	  echo "# Regenerate after changing setup.cfg: make constraints"; \
	  $(PY) -m pip freeze --exclude-editable | grep -v '^kvae'; } > constraints.txt

## make test-other-python: kvae with NO extras on another Python (default 3.12): the core installs
## from setup.cfg's ranges alone, and a model trains, saves and reloads without the optional packages
OTHER_PYTHON ?= $(shell for c in python3.12 $$HOME/.pyenv/versions/3.12*/bin/python3.12 /usr/bin/python3.12; do \
                    $$c -c 'import venv' >/dev/null 2>&1 && { echo $$c; break; }; done)
OTHER_VENV   := .venv-other
test-other-python:
	@if [ -z "$(OTHER_PYTHON)" ]; then echo "test-other-python: no python3.12 on this machine (set OTHER_PYTHON=...): skipped"; exit 0; fi; \
	set -e; $(OTHER_PYTHON) -m venv $(OTHER_VENV); \
	$(OTHER_VENV)/bin/python -m pip install --quiet --upgrade pip; \
	$(OTHER_VENV)/bin/python -m pip install --quiet -e . pytest; \
	KVAE_CORE_ONLY=1 $(OTHER_VENV)/bin/python -m pytest -q -p no:cacheprovider tests/test_core_install.py

## make bench: the throughput benchmark against the PyTorch reference (installs torch==2.13.0 CPU)
bench: $(STAMP)
	$(PY) -m pip install --quiet -e '.[bench]'
	$(PY) bench/throughput.py
