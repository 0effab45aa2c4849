# pgjobs developer commands. Every target builds the virtualenv it needs, so a fresh clone
# only needs `make test`. Override any of these on the command line, e.g.
#   make test PYTHON=python3.12 VENV=.venv-py312 DJANGO='Django>=6.1,<6.2' DATABASES=sqlite

PYTHON ?= python3
VENV ?= .venv
DJANGO ?= Django>=5.2
DATABASES ?= postgres mysql sqlite redis
EXTRAS ?= test,mysql,redis,celery,schedule,wagtail,prometheus,otel
PYTEST_ARGS ?=
PIP_FLAGS ?= --disable-pip-version-check -q

PY := $(VENV)/bin/python
PIP := $(PY) -m pip install $(PIP_FLAGS)
LINT_PATHS := $(wildcard pgjobs tests benchmarks example docs)

# The install is keyed on what decides it (pyproject.toml, the Django spec, the extras): the
# same inputs find their stamp and skip pip; changed inputs name a new stamp and reinstall.
INSTALL_KEY := $(shell { cat pyproject.toml; printf '%s\n' '$(DJANGO)' '$(EXTRAS)'; } | sha1sum | cut -c1-12)
MARKER := $(VENV)/.pgjobs-venv
STAMP := $(VENV)/.pgjobs-installed-$(INSTALL_KEY)
BENCH_STAMP := $(VENV)/.pgjobs-bench-$(INSTALL_KEY)
DOCS_STAMP := $(VENV)/.pgjobs-docs-$(INSTALL_KEY)

.PHONY: venv test lint demo serve bench bench-quick docs clean

venv: $(STAMP)

$(MARKER):
	$(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip
	@echo '$(PYTHON)' > $@

$(STAMP): | $(MARKER)
	@pkg-config --exists mysqlclient 2>/dev/null || pkg-config --exists mariadb 2>/dev/null \
		|| echo "note: building mysqlclient needs pkg-config and libmariadb-dev (apt-get install pkg-config libmariadb-dev)" >&2
	$(PIP) -e '.[$(EXTRAS)]' '$(DJANGO)'
	@rm -f $(VENV)/.pgjobs-installed-* $(VENV)/.pgjobs-bench-* $(VENV)/.pgjobs-docs-*
	@touch $@

$(BENCH_STAMP): $(STAMP)
	$(PIP) -e '.[$(EXTRAS),bench]' '$(DJANGO)'
	@touch $@

$(DOCS_STAMP): $(STAMP)
	$(PIP) -e '.[$(EXTRAS),docs]' '$(DJANGO)'
	@touch $@

# The documentation site, into docs/_build/html. Warnings are errors (a broken reference,
# a page left out of every toctree, a docstring autodoc cannot read); nothing is fetched
# from the network. tests/test_docs.py checks what a build cannot: that the examples run,
# the tutorial works, and every check id and option is documented.
docs: $(DOCS_STAMP)
	$(VENV)/bin/sphinx-build -W --keep-going -q -b html docs docs/_build/html
	@echo "docs: open docs/_build/html/index.html"

# The integration pass (Wagtail, Django's tasks framework) runs per database after the core
# suite, under its own settings, so core tests do not flush Wagtail's tables after each test.
INTEGRATION_TESTS ?= tests/test_django_tasks.py tests/test_django_tasks_upstream.py tests/test_wagtail.py tests/test_wagtail_scheduling.py tests/test_wagtail_renditions.py tests/test_wagtail_bulk.py tests/test_celery_tasks.py

# Lint first: it takes a second and catches what would otherwise fail four database runs.
# The database passes then run in three lanes side by side (TEST_JOBS=1 runs them one after
# the other): much of the suite waits on worker subprocesses and servers, so lanes nearly
# divide the wall time even on two cores. PostgreSQL's pass is the longest (PgBouncer, the
# fault tests, the browser): it has a lane to itself. Each pass has its own test database or
# Redis key prefix, and the fault tests restart a private PostgreSQL, so passes do not collide.
# A lane's output is printed whole when it ends (make -O), not interleaved.
TEST_LANES ?= postgres mysql+sqlite redis
TEST_JOBS ?= 3

test: lint
	@$(MAKE) --no-print-directory -j$(TEST_JOBS) -O $(addprefix test-lane-,$(TEST_LANES))

# test-lane-A+B: the core suite, then the integration pass, on A and then on B; databases
# not in DATABASES are left out.
test-lane-%: $(STAMP)
	@for db in $(filter $(DATABASES),$(subst +, ,$*)); do \
		echo "==> pytest on $$db ($(VENV), $(DJANGO))"; \
		PGJOBS_TEST_DB=$$db $(PY) -m pytest $(PYTEST_ARGS) \
			|| { status=$$?; echo "==> FAILED on $$db (exit $$status)" >&2; exit $$status; }; \
		echo "==> pytest on $$db, Wagtail and Django tasks integration"; \
		PGJOBS_TEST_DB=$$db $(PY) -m pytest --ds=tests.wagtail_settings $(PYTEST_ARGS) $(INTEGRATION_TESTS) \
			|| { status=$$?; echo "==> FAILED on $$db, integration (exit $$status)" >&2; exit $$status; }; \
	done

lint: $(STAMP)
ifeq ($(strip $(LINT_PATHS)),)
	@echo "lint: nothing to check yet"
else
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV)/bin/ruff format --check $(LINT_PATHS)
endif

demo: $(STAMP)
	$(PY) example/manage.py demo

serve: $(STAMP)
	$(PY) example/manage.py serve_demo

bench: $(BENCH_STAMP)
	$(PY) benchmarks/run.py

bench-quick: $(BENCH_STAMP)
	$(PY) benchmarks/run.py --quick

# Removes only virtualenvs this Makefile made (they carry its marker) and tool caches.
clean:
	@for marker in .venv*/.pgjobs-venv $(MARKER); do \
		[ -f "$$marker" ] && echo "rm -rf $$(dirname $$marker)" && rm -rf "$$(dirname $$marker)"; \
	done; true
	rm -rf .pytest_cache .ruff_cache .hypothesis build dist *.egg-info docs/_build
	find . \( -path ./.git -o -path './.venv*' \) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +
