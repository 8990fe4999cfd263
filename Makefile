# convforge: every target installs what it needs into .venv first.
# TF=gpu installs the CUDA build of TensorFlow instead of tensorflow-cpu (never both): make install TF=gpu
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
TF     ?= cpu
STAMP  := $(VENV)/.installed-$(TF)

.PHONY: install demo test test-all bench lint clean

$(STAMP): setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip setuptools wheel 2>&1 | grep -v "is ignored" || true
	CONVFORGE_TF=$(TF) $(PY) -m pip install --quiet -e '.[test]' 2>&1 | grep -v "is ignored" || true
	$(PY) -c "import convforge, tensorflow, keras" 2>/dev/null
	rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP)

DEMO_RECIPE ?= recipes/classification/resnet18_shapes32.yaml
DEMO_OUT    := saved_models/$(basename $(notdir $(DEMO_RECIPE)))

# Train the default recipe on embedded data, export every format (each verified in its own runtime and judged on
# the val split), re-verify the folder, and time every artifact next to Keras.
demo: install
	$(VENV)/bin/convforge train $(DEMO_RECIPE) --quiet
	$(VENV)/bin/convforge evaluate $(DEMO_RECIPE)
	$(VENV)/bin/convforge export $(DEMO_RECIPE) --out $(DEMO_OUT)
	$(VENV)/bin/convforge verify $(DEMO_OUT)
	$(VENV)/bin/convforge bench $(DEMO_OUT)

# Two workers, one per core, each taking whole test files (module fixtures are built once per file): most
# tests run single-threaded, so this halves the wall time (19 -> 12 min on this machine). Each worker's
# TensorFlow keeps one intra-op thread: two pools of two threads on two cores spin against each other (five
# tracing-heavy recipe tests in two processes at once: 169 s with the default pools, 137 s with one thread).
PYTEST_WORKERS ?= 2
test: install
	TF_CPP_MIN_LOG_LEVEL=2 TF_NUM_INTRAOP_THREADS=1 $(PY) -m pytest tests -q -n $(PYTEST_WORKERS) --dist loadfile

# The slow groups too: every architecture exported at full size, receptive fields of the heaviest models.
# One process: the slow group exports full-size models, several GB each, which two workers would hold at once.
test-all: install
	CONVFORGE_SLOW=1 TF_CPP_MIN_LOG_LEVEL=2 $(PY) -m pytest tests -q

bench: install
	TF_CPP_MIN_LOG_LEVEL=2 $(PY) benchmarks/model_table.py
	TF_CPP_MIN_LOG_LEVEL=2 $(PY) benchmarks/pipeline_speed.py
	TF_CPP_MIN_LOG_LEVEL=2 $(PY) benchmarks/export_speed.py
	TF_CPP_MIN_LOG_LEVEL=2 $(PY) benchmarks/detection.py --train
	TF_CPP_MIN_LOG_LEVEL=2 $(PY) benchmarks/segmentation.py --train
	TF_CPP_MIN_LOG_LEVEL=2 $(PY) benchmarks/keypoints.py --train
	TF_CPP_MIN_LOG_LEVEL=2 $(PY) benchmarks/detector_speed.py
	TF_CPP_MIN_LOG_LEVEL=2 $(PY) benchmarks/attacks.py --train
	TF_CPP_MIN_LOG_LEVEL=2 $(PY) benchmarks/style.py --train
	TF_CPP_MIN_LOG_LEVEL=2 $(PY) benchmarks/translation.py --train
	CONVFORGE=$(VENV)/bin/convforge sh benchmarks/compare.sh

lint: install
	$(PY) -m compileall -q src tests benchmarks

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
