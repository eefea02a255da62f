# `make study` and `make test` are all a newcomer needs: both create .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install test test-fast study bench clean

install: $(STAMP)

# Reinstall when the dependency list changes; pip is idempotent otherwise.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -e '.[dev]'
	touch $(STAMP)

test: install
	$(PY) -m pytest -q

# The inner loop while developing: everything but the Ray studies, CLI subprocesses and training runs.
test-fast: install
	$(PY) -m pytest -q -m "not e2e and not slow"

study: install
	$(VENV)/bin/dml-study run configs/default.yaml

bench: install
	for f in benchmarks/bench_*.py; do echo "== $$f"; $(PY) $$f || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache studies
