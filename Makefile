# convforge: every target installs what it needs into .venv first.
# TF=gpu installs the CUDA build of TensorFlow instead of tensorflow-cpu (never both): make install TF=gpu
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
TF     ?= cpu
STAMP  := $(VENV)/.installed-$(TF)

.PHONY: install demo test bench lint clean

$(STAMP): setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip setuptools wheel 2>&1 | grep -v "is ignored" || true
	CONVFORGE_TF=$(TF) $(PY) -m pip install --quiet -e '.[test]' 2>&1 | grep -v "is ignored" || true
	$(PY) -c "import convforge, tensorflow, keras" 2>/dev/null
	rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP)

DEMO_RECIPE ?= recipes/classification/lenet5_digits.yaml

# Train the default recipe on embedded data, export every format (each verified in its own runtime), re-verify.
demo: install
	$(VENV)/bin/convforge train $(DEMO_RECIPE) --quiet
	$(VENV)/bin/convforge evaluate $(DEMO_RECIPE)
	$(VENV)/bin/convforge export $(DEMO_RECIPE)
	$(VENV)/bin/convforge verify saved_models/$$(basename $(DEMO_RECIPE) .yaml)

test: install
	TF_CPP_MIN_LOG_LEVEL=2 $(PY) -m pytest tests -q

bench: install
	TF_CPP_MIN_LOG_LEVEL=2 $(PY) benchmarks/model_table.py
	TF_CPP_MIN_LOG_LEVEL=2 $(PY) benchmarks/pipeline_speed.py
	TF_CPP_MIN_LOG_LEVEL=2 $(PY) benchmarks/export_speed.py
	CONVFORGE=$(VENV)/bin/convforge sh benchmarks/compare.sh

lint: install
	$(PY) -m compileall -q src tests benchmarks

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
