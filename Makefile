# One entry point for people and CI. `make run` starts a local gateway; `make test` sets up and runs every test.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup run test test-deps bench bench-deps bench-quick lint clean

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[test,redis,speed]'
	touch $@

setup: $(VENV)/.installed

run: setup
	$(PY) -m wcfrelay gateway --host 127.0.0.1 --port $${PORT:-9351}

test-deps:
	scripts/install-test-deps.sh

# Lint (ruff, rules in pyproject.toml) and type checks, the whole suite on the default Python, then the WCF-style
# layer again on Python 3.13 (Spyne needs a compatibility measure there), in its own venv.
test: setup test-deps
	$(PY) -m ruff check hybrid wcfrelay tests bench samples
	$(PY) -m mypy hybrid wcfrelay bench
	$(PY) -m pytest -q $(PYTEST_ARGS)
	.ci/py313-setup.sh 3.13.0 .venv313

bench-deps: setup
	$(PY) -m pip install -q -e '.[bench]'

bench-quick: bench-deps test-deps
	$(PY) -m bench --quick

bench: bench-deps test-deps
	$(PY) -m bench

lint: setup
	$(PY) -m ruff check hybrid wcfrelay tests bench samples

clean:
	rm -rf $(VENV) tests/node/node_modules
