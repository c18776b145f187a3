# Two commands on a fresh clone: `make demo` and `make test`. Both create .venv when missing: the pinned runtime
# (requirements.txt) and test/lint (requirements-test.txt) dependencies, and this project installed editable
# (`pip install -e .`, so no PYTHONPATH is needed).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export TF_CPP_MIN_LOG_LEVEL := 2
PYTEST := $(PY) -m pytest -q -p no:cacheprovider --durations=15

.PHONY: test test-fast lint demo venv clean convert-lite0

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-test.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt -r requirements-test.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $@

# Everything CI runs (≤ 12 min on a quiet 2-core host): lint, the reference-spec check, every test, one pytest-xdist
# worker per core, each test file on one worker (module fixtures are built once), the longest files first
# (tests/conftest.py FILE_SECONDS; xdist's default order by test count sent the minute-long end-to-end files last).
test: venv lint
	$(PY) -m tools.reference_specs --check
	$(PYTEST) -n auto --dist loadfile --no-loadscope-reorder tests

# In-process unit tests on tiny configs (≤ 3 min on 2 cores): no test marked slow, one worker per core as above.
test-fast: venv
	$(PYTEST) -x -m "not slow" -n auto --dist loadfile --no-loadscope-reorder tests

lint: venv
	$(VENV)/bin/ruff check .

demo: venv
	$(PY) -m recipes.pipeline --out_dir=runs/demo

clean:
	rm -rf runs .pytest_cache

# Tool-time only: convert the ImageNet EfficientNet-Lite0 weights (needs PyTorch, installed into .venv-tools).
convert-lite0:
	test -x .venv-tools/bin/python || $(PYTHON) -m venv .venv-tools
	.venv-tools/bin/pip install --quiet --disable-pip-version-check -r requirements.txt -r tools/requirements-convert.txt
	.venv-tools/bin/pip install --quiet --disable-pip-version-check --no-deps -e .
	.venv-tools/bin/python -m tools.convert_efficientnet_lite0
