# One command each:  make demo  (set up + run the offline demo)   make test  (set up + run the tests)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CORES ?= 2

PRESET ?= presets/demo.yaml
REPORT ?= results/demo/report.html

.PHONY: setup demo report test dry-run rulegraph clean-demo

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

demo: setup  ## every table and figure of the offline demo preset, and the HTML report -> results/demo/
	$(BIN)/snakemake --configfile $(PRESET) --cores $(CORES) all_tables --report $(REPORT) --report-after-run

report: setup  ## the HTML report (scorecard first, then tables and figures) of a finished run
	$(BIN)/snakemake --configfile $(PRESET) --report $(REPORT)

test: setup  ## the test suite (CI runs exactly this)
	$(BIN)/pytest

dry-run: setup  ## validate the paper-scale DAG without running anything
	$(BIN)/snakemake -n --cores 1 all_tables

rulegraph: setup
	$(BIN)/snakemake --rulegraph mermaid-js all_tables

clean-demo:
	rm -rf results/demo
