# One-command setup: `make test` creates .venv if needed, installs torch first (the local CPU wheel
# on the dev machines, the normal PyPI build elsewhere), then the package, then runs pytest.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_VERSION ?= 2.13.0
# The package's extras to install (`make test EXTRAS=dev,demo` also runs the demo's tests; .ci/run does).
EXTRAS ?= dev
comma := ,
STAMP = $(VENV)/.installed-$(subst $(comma),-,$(EXTRAS))

.PHONY: test setup quickstart lint bench clean demo

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# Reinstall only when the project's metadata changed (editable install picks up code changes).
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q "torch==$(TORCH_VERSION)"
	$(PY) -m pip install -q -e '.[$(EXTRAS)]'
	touch $(STAMP)

setup: $(STAMP)

# The whole suite, the slow tests included (a plain `pytest` leaves out those marked slow: the wheel test).
test: $(STAMP)
	$(PY) -m pytest -q -m "slow or not slow" $(PYTEST_ARGS)

lint: $(STAMP)
	$(PY) -m ruff check unsup3d conf scripts tests

quickstart: $(STAMP)
	$(PY) scripts/quickstart.py

# The web demo: installs the demo extra into .venv, then serves CHECKPOINT when one is given
# (`make demo CHECKPOINT=outputs/synthetic_cpu/checkpoints/last.ckpt`), else prints the command.
demo:
	$(MAKE) setup EXTRAS=dev,demo
	@if [ -n "$(CHECKPOINT)" ]; then $(VENV)/bin/unsup3d-demo --checkpoint "$(CHECKPOINT)" $(DEMO_ARGS); \
	else echo "demo installed; serve a checkpoint with: $(VENV)/bin/unsup3d-demo --checkpoint CKPT" \
	  "(or make demo CHECKPOINT=CKPT), then open http://127.0.0.1:7860/"; fi

bench: $(STAMP)
	$(PY) scripts/bench_renderer.py

clean:
	rm -rf $(VENV) outputs .pytest_cache
