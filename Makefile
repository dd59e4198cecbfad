# One-command setup: `make test` creates .venv if needed, installs torch first (the local CPU wheel
# on the dev machines, the normal PyPI build elsewhere), then the package, then runs pytest.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_VERSION ?= 2.13.0
STAMP := $(VENV)/.installed

.PHONY: test setup quickstart lint bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# Reinstall only when the project's metadata changed (editable install picks up code changes).
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q "torch==$(TORCH_VERSION)"
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS)

lint: $(STAMP)
	$(PY) -m ruff check unsup3d scripts tests

quickstart: $(STAMP)
	$(PY) scripts/quickstart.py

bench: $(STAMP)
	$(PY) scripts/bench_renderer.py

clean:
	rm -rf $(VENV) outputs .pytest_cache
