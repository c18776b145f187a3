# Two commands on a fresh clone: `make demo` and `make test`. Both create .venv from requirements.txt when missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export TF_CPP_MIN_LOG_LEVEL := 2
export PYTHONPATH := $(CURDIR)

.PHONY: test demo venv clean convert-lite0

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

test: venv
	$(PY) -m tools.reference_specs --check
	$(PY) -m pytest -q -x -p no:cacheprovider tests

demo: venv
	$(PY) -m recipes.pipeline --out_dir=runs/demo

clean:
	rm -rf runs .pytest_cache

# Tool-time only: convert the ImageNet EfficientNet-Lite0 weights (needs PyTorch, installed into .venv-tools).
convert-lite0:
	test -x .venv-tools/bin/python || $(PYTHON) -m venv .venv-tools
	.venv-tools/bin/pip install --quiet --disable-pip-version-check -r requirements.txt -r tools/requirements-convert.txt
	.venv-tools/bin/python -m tools.convert_efficientnet_lite0
