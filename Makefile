# kiln's set-up, demo and tests. Every target makes and uses a virtual environment.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.kiln-installed
PYTEST_ARGS ?=

.PHONY: setup demo test lint bench-conformance clean

setup: $(STAMP)

# torch is installed first, pinned, so nothing later resolves a bare "torch".
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip setuptools wheel
	$(PY) -m pip install -c constraints.txt "torch==2.13.0"
	$(PY) -m pip install -c constraints.txt -e ".[all]"
	touch $(STAMP)

demo: setup
	$(VENV)/bin/kiln demo

lint: setup
	$(VENV)/bin/ruff check kiln tests benchmarks

# pytest exits 5 when it collected no tests: that fails the target, loudly.
test: setup lint
	@$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests; failing" >&2; fi; \
	exit $$rc

bench-conformance: setup
	$(PY) benchmarks/conformance.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
