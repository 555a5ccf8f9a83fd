# Two commands from a fresh clone: `make demo` (the main job) and `make test`.
# Each creates the virtual environment in .venv on first use and installs the package into it.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test docs notebook benchmark clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

# Train the default VAE on the shipped binarized MNIST (about 35 s of training on an idle 2-core CPU),
# evaluate it, and write its metrics and pictures under runs/.
demo: $(VENV)/.installed
	$(BIN)/pyro-vae train --epochs 10

test: $(VENV)/.installed
	$(BIN)/python -m pytest -q -n auto

# The manual (mkdocs.yml, docs/) built into site/ with warnings as errors, offline; the docs extra is installed
# into .venv on first use. The variables silence notices about MkDocs 2.0 that its plugins print on every build.
$(VENV)/.docs-installed: $(VENV)/.installed
	$(BIN)/pip install --quiet -e ".[docs]"
	touch $@

docs: $(VENV)/.docs-installed
	NO_MKDOCS_2_WARNING=1 DISABLE_MKDOCS_2_WARNING=true $(BIN)/mkdocs build --strict

# The tutorial notebook (examples/tutorial.ipynb) executed cell by cell with nbmake; the notebook extra is installed
# into .venv on first use.
$(VENV)/.notebook-installed: $(VENV)/.installed
	$(BIN)/pip install --quiet -e ".[notebook]"
	touch $@

notebook: $(VENV)/.notebook-installed
	cd examples && ../$(BIN)/python -m pytest -q --nbmake tutorial.ipynb

benchmark: $(VENV)/.installed
	$(BIN)/python benchmarks/svi_vs_pytorch.py

clean:
	rm -rf $(VENV) runs .pytest_cache site
