# One command each:  make demo  (set up + run the offline demo)   make test  (set up + run the tests)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CORES ?= 2

.PHONY: setup demo test dry-run rulegraph clean-demo

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

demo: setup  ## every table and figure of the offline demo preset -> results/demo/
	$(BIN)/snakemake --configfile presets/demo.yaml --cores $(CORES) all_tables

test: setup  ## the test suite (CI runs exactly this)
	$(BIN)/pytest

dry-run: setup  ## validate the paper-scale DAG without running anything
	$(BIN)/snakemake -n --cores 1 all_tables

rulegraph: setup
	$(BIN)/snakemake --rulegraph mermaid-js all_tables

clean-demo:
	rm -rf results/demo
