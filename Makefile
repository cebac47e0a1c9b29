# Everything runs from the project's own virtualenv in .venv.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
LOTSEN_HOME ?= ./var
export LOTSEN_HOME

.PHONY: install run test test-unit bench bench-national clean

$(BIN)/lotsen: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

install: $(BIN)/lotsen

# Migrates, loads demo data (once) and serves every service in one process.
run: install
	@scripts/ensure-rabbitmq || true
	$(BIN)/lotsen migrate
	$(BIN)/lotsen demo
	$(BIN)/lotsen run

# Unit tests, then integration tests against the real RabbitMQ and PostgreSQL.
test: install
	@scripts/ensure-services
	@scripts/ensure-browser
	$(BIN)/python -m pytest

test-unit: install
	$(BIN)/python -m pytest tests/unit

bench: install
	$(BIN)/python bench/import_register.py
	$(BIN)/python bench/throughput.py

# The national case: the whole register, every service in its own process (about an hour
# here; LANDS=08 for Baden-Württemberg alone, a few minutes).
LANDS ?=
bench-national: install
	$(BIN)/python bench/national.py $(if $(LANDS),--lands $(LANDS))

clean:
	rm -rf $(VENV) var *.egg-info
