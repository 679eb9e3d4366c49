# Two commands matter: `make book` (build the HTML book) and `make test` (everything CI checks).
# Both create .venv and install the pinned environment first, on a machine with only python3 + make.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PAGES = $(shell grep -l "^kernelspec:" chapters/*.md)

# No progress bars in the built HTML, nbval or CI logs (readers in Jupyter/Colab still get them).
export STORYOPT_PROGRESS := 0
# One intra-op thread: the same floats in the build and in nbval however busy the machine is, and
# no oversubscription when pages, pytest and torchrun processes share the two cores.
export OMP_NUM_THREADS := 1
# Deterministic str hashing in every process the build and the tests start.
export PYTHONHASHSEED := 0

.PHONY: book test lint format notebooks serve clean bench gpu-check setup pytest nbval

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -q -r requirements.txt
	$(BIN)/python -m pip install --disable-pip-version-check -q --no-deps --no-build-isolation -e .
	touch $@

book: $(STAMP)
	$(BIN)/jupyter-book build . -W -n --keep-going
	@echo
	@echo "The book is in _build/html. Open _build/html/index.html in a browser, or run 'make serve'."

notebooks: $(STAMP)
	$(BIN)/jupytext --quiet --update --to ipynb $(PAGES)  # --update keeps existing cell ids: no noisy diffs

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# pytest: library tests, book checks (built HTML, paired notebooks) and the browser test.
# nbval: re-executes every page's executed notebook from the build and compares each output.
test: lint book pytest nbval

pytest: $(STAMP)
	$(BIN)/pytest tests

nbval: $(STAMP)
	$(BIN)/pytest --nbval --nbval-current-env --nbval-cell-timeout=300 -p no:cacheprovider -p tests.nbval_glue \
		-o testpaths= _build/jupyter_execute/chapters

serve: $(STAMP)
	@echo "Serving _build/html on http://127.0.0.1:8000 (Ctrl-C to stop)"
	$(BIN)/python -m http.server 8000 --bind 127.0.0.1 --directory _build/html

bench: $(STAMP)
	@set -e; for f in benchmarks/bench_*.py; do echo "== $$f"; $(BIN)/python $$f; done

gpu-check: $(STAMP)
	$(BIN)/python benchmarks/gpu_check.py

clean:
	rm -rf _build .pytest_cache .ruff_cache .hypothesis
	find . -name __pycache__ -not -path "./$(VENV)/*" -exec rm -rf {} +
