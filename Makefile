# Two commands from a fresh clone: `make demo` (the main job) and `make test`.
# Each creates the virtual environment in .venv on first use and installs the package into it.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test benchmark clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

# Train the default VAE on the shipped binarized MNIST (about 35 s of training on an idle 2-core CPU),
# evaluate it, and write its metrics and pictures under runs/.
demo: $(VENV)/.installed
	$(BIN)/pyro-vae train --epochs 10

test: $(VENV)/.installed
	$(BIN)/python -m pytest -q

benchmark: $(VENV)/.installed
	$(BIN)/python benchmarks/svi_vs_pytorch.py

clean:
	rm -rf $(VENV) runs .pytest_cache
