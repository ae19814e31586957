# Two entry points for a fresh machine (see README "Quick start"):
#   make demo   set up, then benchmark a built-in tokenizer on the built-in suites
#   make test   set up, then run the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
OUT ?= runs/demo

.PHONY: setup system-deps demo test

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

# setup also compiles the fused CPU nearest-codeword kernel (≈1 min, once per environment and
# source version), so that no later command stops to build it; without a C++ compiler tokbench
# still works (the chunked PyTorch path) and this step says why.
setup: $(VENV)/.installed
	$(VENV)/bin/tokbench build-ext --cpu-only || echo "setup: the fused CPU kernel did not build (see above); tokbench falls back to the PyTorch path"

system-deps:
	./scripts/install_system_deps.sh

# The built-in default: JPEG at quality 50 on the three built-in suites. LPIPS and rFID
# need pretrained weights that a fresh offline machine lacks (`tokbench weights fetch`):
# without them the run skips those two, naming the missing files at start, in the table,
# the results file and the report.
demo: setup system-deps
	$(VENV)/bin/tokbench eval --tokenizer jpeg:q=50 --tasks reconstruction,detail,text --out $(OUT)

test: setup
	TOKBENCH_FOR_TESTS=1 ./scripts/install_system_deps.sh
	$(PY) -m pytest -q
