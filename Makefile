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

demo: install
	$(VENV)/bin/convforge models
	$(VENV)/bin/convforge summary resnet18 --input-shape 64,64,3

test: install
	TF_CPP_MIN_LOG_LEVEL=2 $(PY) -m pytest tests -q

bench: install
	TF_CPP_MIN_LOG_LEVEL=2 $(PY) benchmarks/model_table.py

lint: install
	$(PY) -m compileall -q src tests benchmarks

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
