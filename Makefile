# Two commands on a fresh clone: `make demo` and `make test`. Both create .venv from requirements.txt when missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export TF_CPP_MIN_LOG_LEVEL := 2
export PYTHONPATH := $(CURDIR)

.PHONY: test demo venv clean specs-check

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

test: venv
	$(PY) -m tools.reference_specs --check
	$(PY) -m pytest -q -x -p no:cacheprovider tests

demo: venv
	$(PY) -m recipes.demo --out_dir=runs/demo

clean:
	rm -rf runs .pytest_cache
