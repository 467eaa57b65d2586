# The README's contract: `make demo` and `make test`, each on a fresh clone.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH := torch==2.13.0
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: setup test demo clean

setup: $(STAMP)

# Re-installs only when the package metadata changes; torch first so the CPU wheel is the one kept.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip uninstall -q -y hiclip 2>/dev/null || true  # the distribution's name before hiclip-toolkit
	$(BIN)/python -m pip install -q -e ".[dev]" $(TORCH)
	touch $(STAMP)

test: setup
	$(BIN)/python -m pytest -q -ra $(PYTEST_ARGS)

DEMO_ARGS ?=
demo: setup
	$(BIN)/hiclip demo $(if $(TRAIN),--train,) $(DEMO_ARGS)

clean:
	rm -rf $(VENV) runs .pytest_cache
