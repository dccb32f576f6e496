# shopmesh: `make run` brings the whole mesh up in the foreground, `make test` runs the suite against it.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run up down status logs watch install test unit clean

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "shopmesh needs Python 3.11 ($(PYTHON) not found)"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test]'
	@touch $@

install: $(STAMP)
	$(BIN)/shopmesh install

run: $(STAMP)
	$(BIN)/shopmesh run

up: $(STAMP)
	$(BIN)/shopmesh up

down: $(STAMP)
	$(BIN)/shopmesh down

status: $(STAMP)
	$(BIN)/shopmesh status

logs: $(STAMP)
	$(BIN)/shopmesh logs

watch: $(STAMP)
	$(BIN)/shopmesh watch

test: install
	$(BIN)/pytest

unit: $(STAMP)
	$(BIN)/pytest tests/unit

clean: down
	rm -rf var
