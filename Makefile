# Gatepass developer commands. `make test` works from a fresh clone: it makes .venv first.
#
#   make venv    .venv with Gatepass installed editable, plus the dev tools
#   make run     a demo installation in ./gatepass-data (created once), served with the built-in demo target
#   make test    the whole pytest suite on SQLite and again on PostgreSQL (GATEPASS_TEST_POSTGRES), side by side
#                (TEST_JOBS=1: one after the other), with branch coverage printed after each pass (COVERAGE= turns it off)
#   make lint    ruff + mypy --strict
#   make bench   every benchmark in bench/, then a summary (ratio against the peer measured in the same run, load)
#   make screenshots  retake the README's screenshots of the web pages (browser tests)
#
# PostgreSQL: GATEPASS_TEST_POSTGRES is a server URL *without* a database; each test creates its own
# database gp_test_<random> there and drops it afterwards. Override it to use another server, e.g.
#   make test GATEPASS_TEST_POSTGRES=postgresql+psycopg://me:secret@db.local:5432
# `make test-sqlite` / `make test-postgres` run one pass; PYTEST_ARGS passes options (e.g. PYTEST_ARGS='-x -k sshd').

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP_FLAGS := --quiet --disable-pip-version-check --no-input
GATEPASS_TEST_POSTGRES ?= postgresql+psycopg://postgres@127.0.0.1:5432
PYTEST_ARGS ?=
# Branch coverage of the product's packages, printed after each pass (settings in pyproject.toml).
COVERAGE ?= --cov --cov-report=term
DATA ?= gatepass-data

.PHONY: venv run test test-sqlite test-postgres lint bench screenshots

venv: $(BIN)/.installed

# Reinstalled when pyproject.toml changes (new dependencies); the stamp lives inside .venv.
$(BIN)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install $(PIP_FLAGS) -e '.[dev]'
	@touch $@

run: venv
	@test -d $(DATA) || $(BIN)/gatepass init --data $(DATA)
	$(BIN)/gatepass serve --data $(DATA) --demo

# Both passes always run: a SQLite failure must not hide the PostgreSQL result. Fails if either failed.
# They run side by side (TEST_JOBS=1: one after the other): the suite mostly waits on real ssh, sshd, Chromium and
# PostgreSQL, so the two passes together take about as long as the longer one instead of the sum (CI's hour). The
# PostgreSQL pass prints as it goes; the SQLite pass's output follows when both are done. Each keeps its own
# coverage data file.
TEST_JOBS ?= 2

test: venv
	@status=0; \
	if [ "$(TEST_JOBS)" = 1 ]; then \
		$(MAKE) --no-print-directory test-sqlite || status=1; \
		$(MAKE) --no-print-directory test-postgres || status=$$((status + 2)); \
	else \
		sqlite_log=$$(mktemp); \
		COVERAGE_FILE=.coverage.sqlite $(MAKE) --no-print-directory test-sqlite >"$$sqlite_log" 2>&1 & sqlite_pid=$$!; \
		COVERAGE_FILE=.coverage.postgres $(MAKE) --no-print-directory test-postgres || status=2; \
		wait $$sqlite_pid || status=$$((status + 1)); \
		echo; echo "=== the SQLite pass (it ran beside the PostgreSQL pass above)"; cat "$$sqlite_log"; rm -f "$$sqlite_log"; \
	fi; \
	case $$status in \
		0) echo "make test: both passes (SQLite, PostgreSQL) passed";; \
		1) echo "make test: the SQLite pass FAILED (PostgreSQL passed)"; exit 1;; \
		2) echo "make test: the PostgreSQL pass FAILED (SQLite passed)"; exit 1;; \
		*) echo "make test: both passes FAILED"; exit 1;; \
	esac

# `env -u` so a GATEPASS_TEST_POSTGRES in the caller's environment does not turn this pass into PostgreSQL.
test-sqlite: venv
	env -u GATEPASS_TEST_POSTGRES -u GATEPASS_DATABASE_URL $(BIN)/python -m pytest $(COVERAGE) $(PYTEST_ARGS)

test-postgres: venv
	env -u GATEPASS_DATABASE_URL GATEPASS_TEST_POSTGRES='$(GATEPASS_TEST_POSTGRES)' $(BIN)/python -m pytest $(COVERAGE) $(PYTEST_ARGS)

# Retake the README's screenshots of the web pages (the browser tests write them to docs/screenshots/).
screenshots: venv
	env -u GATEPASS_TEST_POSTGRES GATEPASS_SCREENSHOTS=1 $(BIN)/python -m pytest tests/approvals -q

lint: venv
	$(BIN)/ruff check .
	$(BIN)/mypy

# `python -m bench` runs every benchmark in bench/ (`python -m bench --list`) and ends with one summary table: each
# figure beside its peer measured in the same run, the ratio, and the load average. The audit benchmark also appends
# on PostgreSQL (BENCH_POSTGRES, default the test server above; BENCH_POSTGRES= skips it). BENCH_ARGS passes options
# (e.g. BENCH_ARGS='--quick' or BENCH_ARGS='--only tunnels --only revoke').
BENCH_POSTGRES ?= $(GATEPASS_TEST_POSTGRES)
BENCH_ARGS ?=

bench: venv
	BENCH_POSTGRES='$(BENCH_POSTGRES)' $(BIN)/python -m bench $(BENCH_ARGS)
