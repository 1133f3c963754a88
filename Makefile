VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install test test-reliability lint typecheck pytest demo bench pg browser promtool check-image audit clean

install: $(STAMP)

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports --no-cache

typecheck: install
	$(VENV)/bin/mypy

pytest: install pg browser promtool
	$(VENV)/bin/pytest -q --durations=25

test: lint typecheck pytest

# The longer tier: crash trials, fault matrices, large syncs, bad-input tables.
test-reliability: install pg
	$(VENV)/bin/pytest -q -m long --durations=25

# Starts a local PostgreSQL with the test database when it can (no-op if already up).
pg:
	@scripts/pg-up.sh || echo "warning: PostgreSQL not available; PG tests will fail under CI" >&2

# Debian's chromium for the status page browser test (no-op if installed).
browser:
	@scripts/browser-up.sh || echo "warning: chromium not available; the browser test will fail" >&2

# promtool for the alert rules test, unpacked from Debian's package under var/tools/.
promtool:
	@scripts/promtool-up.sh >/dev/null || echo "warning: promtool not available; the rules test will fail" >&2

demo: install
	$(VENV)/bin/vendorsync demo

# Every benchmark in bench/ (`python -m bench --list`), quick sizes; results in bench/results/.
bench: install pg
	$(PY) -m bench --all --quick

# Dockerfile (hadolint), compose file (docker-compose config), and the image's install steps.
check-image: install
	scripts/check-image.sh

# Known vulnerabilities in the installed dependencies (pip-audit; see scripts/audit.sh):
# fails on one, warns when no vulnerability service can be reached.
audit: install
	scripts/audit.sh

clean:
	rm -rf $(VENV) var/*.db .mypy_cache .pytest_cache .ruff_cache
