# spora-sd: the two commands of the README are `make demo` and `make test`.
# Each creates .venv when it is missing and installs the project with every extra first.

SHELL := /bin/bash
PYTHON_BOOT ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# Installs are pinned to the environments the suite last passed in (constraints/*.txt, a pip freeze):
# without them the resolver may pick other releases on another day (e.g. spatialdata 0.7.0, which
# needs pkg_resources). The stamp changes with pyproject.toml or the constraints.
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml constraints/py311.txt | cksum | cut -d' ' -f1)

PY312_BOOT ?= env PYENV_VERSION=3.12.1 python3.12
VENV312 ?= .venv312
PY312 := $(VENV312)/bin/python
STAMP312 := $(VENV312)/.installed-$(shell cat pyproject.toml constraints/py312.txt | cksum | cut -d' ' -f1)

# torch: the extra stays loose for users; here we pin the CPU wheel that lies on this machine's disk,
# because a plain `torch` requirement makes pip download a multi-GB CUDA build.
TORCH_PIN ?= torch==2.13.0
PYTEST_ARGS ?= -n 2 --dist loadgroup

.PHONY: vitessce-bundle install install-py312 demo test test-py312 test-unconstrained test-unit lint docs notebooks bench bench-quick clean

# `spora-sd view`: the `vitessce` Python package builds the view configs. It is installed with
# --no-deps because every release (3.8.4 is the newest) caps zarr<3 in its metadata, which no extra
# of ours can declare next to zarr 3; its config builder runs with zarr 3. Of its other dependencies
# only black (imported by vitessce.config) is not ours already.
VITESSCE_PY ?= vitessce==3.8.4

$(STAMP): pyproject.toml constraints/py311.txt
	@test -x $(PY) || $(PYTHON_BOOT) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c constraints/py311.txt "$(TORCH_PIN)"
	$(PIP) install -q -c constraints/py311.txt -e ".[all]"
	$(PIP) install -q "black>=24" && $(PIP) install -q --no-deps "$(VITESSCE_PY)"
	@rm -f $(VENV)/.installed-* && touch $(STAMP)

install: $(STAMP)

$(STAMP312): pyproject.toml constraints/py312.txt
	@test -x $(PY312) || $(PY312_BOOT) -m venv $(VENV312)
	$(PY312) -m pip install -q --upgrade pip
	$(PY312) -m pip install -q -c constraints/py312.txt -e ".[io,analysis,lamin,distributed,remote,dev]"
	$(PY312) -m pip install -q "black>=24" && $(PY312) -m pip install -q --no-deps "$(VITESSCE_PY)"
	@rm -f $(VENV312)/.installed-* && touch $(STAMP312)

install-py312: $(STAMP312)

# The Vitessce JavaScript of `spora-sd view` (Vitessce's core with the page's views, from the npm @vitessce
# packages, + React; one ~5 MB file, not in git) is bundled with esbuild into the package's static folder,
# which the wheel ships. Built only when npm is present;
# without it `spora-sd view` says how to build it.
BUNDLE := src/spora_sd/viewer/static/vitessce-bundle.js
BUNDLE_SRC := $(addprefix js/vitessce-bundle/,package.json package-lock.json build.mjs) $(wildcard js/vitessce-bundle/*.js)

vitessce-bundle: $(BUNDLE)

$(BUNDLE): $(BUNDLE_SRC)
	@if command -v npm >/dev/null; then \
	  cd js/vitessce-bundle && npm ci --no-audit --no-fund --loglevel=error && npm run build; \
	else echo "npm not found: $(BUNDLE) not built (spora-sd view needs it; see js/vitessce-bundle)"; fi

demo: $(STAMP)
	$(VENV)/bin/spora-sd demo --out spora-demo

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

# The whole suite: lint, unit and integration tests (SQLite and a real PostgreSQL server),
# doctests, the Sphinx docs (warnings are errors), the notebooks, the benchmark smoke run. The docs and
# the smoke run are independent and each keeps about one core busy: they run side by side (quick-mode
# figures mean nothing anyway); --output-sync keeps each one's log in one piece.
test: $(STAMP) vitessce-bundle
	$(MAKE) lint
	bash .ci/system-tools.sh
	set -o pipefail; PG_URL=$$(bash .ci/postgres.sh start) || exit 1; \
	  SPORA_SD_TEST_PG_URL=$$PG_URL $(PY) -m pytest $(PYTEST_ARGS) tests src/spora_sd --doctest-modules; rc=$$?; \
	  bash .ci/postgres.sh stop; exit $$rc
	$(MAKE) -j 2 --output-sync=target docs bench-quick

test-unit: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS) tests -m "not postgres"

# Python 3.12 (spatialdata 0.8.x resolves there). torch has no CPU wheel for 3.12 on these machines:
# see the README's "Python 3.12" note for what that leaves out.
test-py312: $(STAMP312) vitessce-bundle
	bash .ci/system-tools.sh
	set -o pipefail; PG_URL=$$(bash .ci/postgres.sh start) || exit 1; \
	  echo "Python 3.12: tests/ml/test_torch.py is not run (no CPU torch wheel for 3.12 here; see README)"; \
	  SPORA_SD_TEST_PG_URL=$$PG_URL $(PY312) -m pytest $(PYTEST_ARGS) tests src/spora_sd --doctest-modules --ignore=tests/ml/test_torch.py; rc=$$?; \
	  bash .ci/postgres.sh stop; exit $$rc

# What a user gets: a fresh venv, `pip install ".[all]"` with no constraints file (only the CPU torch
# wheel, as above), then the test suite (PostgreSQL included) against that installed, non-editable copy.
VENVFREE ?= .venv-unconstrained
test-unconstrained: vitessce-bundle
	bash .ci/system-tools.sh
	rm -rf $(VENVFREE)
	$(PYTHON_BOOT) -m venv $(VENVFREE)
	$(VENVFREE)/bin/python -m pip install -q --upgrade pip
	$(VENVFREE)/bin/python -m pip install -q "$(TORCH_PIN)"
	$(VENVFREE)/bin/python -m pip install -q ".[all]"
	$(VENVFREE)/bin/python -m pip install -q "black>=24" && $(VENVFREE)/bin/python -m pip install -q --no-deps "$(VITESSCE_PY)"
	@echo "Unconstrained install resolved:"; $(VENVFREE)/bin/python -m pip freeze | grep -iE '^(spatialdata|spatialdata-io|squidpy|lamindb|anndata|zarr|dask|xarray|numpy|pandas)=='
	set -o pipefail; PG_URL=$$(bash .ci/postgres.sh start) || exit 1; \
	  SPORA_SD_TEST_PG_URL=$$PG_URL $(VENVFREE)/bin/python -m pytest $(PYTEST_ARGS) tests; rc=$$?; \
	  bash .ci/postgres.sh stop; exit $$rc

docs: $(STAMP)
	$(VENV)/bin/sphinx-build -W --keep-going -b html -q docs docs/_build/html

bench: $(STAMP)
	$(PY) benchmarks/run.py

bench-quick: $(STAMP)
	$(PY) benchmarks/run.py --quick

clean:
	rm -rf $(VENV) $(VENV312) $(VENVFREE) docs/_build spora-demo .pytest_cache
