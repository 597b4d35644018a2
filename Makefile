# Two commands do all the set-up on a fresh machine (Python >= 3.11, pip, access to PyPI):
#   make demo   - install, then run the offline quickstart (pretrained vs from-scratch on real digits)
#   make test   - install with test extras, then run the whole test suite
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: demo test bench-quick install install-test

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install --quiet -e .

install-test: $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'

demo: install
	HF_HUB_OFFLINE=1 $(BIN)/python scripts/finetune.py recipes/quickstart.yaml --set output.overwrite=true

test: install-test
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest tests -q

# Speed smoke run against ../shared (about 3 minutes on 2 cores); full run: scripts/bench.py --output bench.json
bench-quick: install
	HF_HUB_OFFLINE=1 $(BIN)/python scripts/bench.py --quick --output bench-quick.json
