# shopmesh: `make run` brings the whole mesh up in the foreground, `make test` runs the suite against it.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run up down status logs watch install test unit lint lock walkthrough-images clean \
	run-cluster up-cluster down-cluster status-cluster test-cluster

# Every Python package comes from a lock file, each checked against its hash: requirements.lock holds what the mesh
# runs (the Docker image installs it), requirements-dev.lock adds the tests' and checks' tools within the same
# versions. pyproject.toml keeps the direct pins, and `make lock` writes both lock files from them.
$(STAMP): pyproject.toml requirements-dev.lock
	@command -v $(PYTHON) >/dev/null || { echo "shopmesh needs Python 3.11 ($(PYTHON) not found)"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check --require-hashes -r requirements-dev.lock
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps -e .
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

# The cluster topology (README: Scaling out): three Consul servers, three Kafka nodes, two of everything else, on
# the loopback hosts 127.0.0.2-4, with its own state under var/cluster/.
run-cluster: $(STAMP)
	$(BIN)/shopmesh run --topology cluster

up-cluster: $(STAMP)
	$(BIN)/shopmesh up --topology cluster

down-cluster: $(STAMP)
	$(BIN)/shopmesh down --topology cluster

status-cluster: $(STAMP)
	$(BIN)/shopmesh status --topology cluster

# The suite on the single mesh, then the cluster topology's fault suite on a cluster of its own (tests/cluster).
test: install lint
	$(BIN)/pytest
	$(BIN)/pytest --cluster tests/cluster

test-cluster: install
	$(BIN)/pytest --cluster tests/cluster

# The fast tier: no component runs, nothing is installed beyond the Python packages.
unit: $(STAMP)
	$(BIN)/shopmesh codegen
	$(BIN)/pytest tests/unit

# ruff (lint and format) and mypy over the code; the generated modules are read through their .pyi stubs.
lint: $(STAMP)
	$(BIN)/shopmesh codegen
	$(BIN)/ruff check shopmesh services dataflows tests bench
	$(BIN)/ruff format --check shopmesh services dataflows tests bench
	$(BIN)/mypy

LOCK := $(BIN)/uv pip compile pyproject.toml --generate-hashes --python-version 3.11 \
	--python-platform x86_64-manylinux_2_31 --custom-compile-command "make lock" --quiet

lock: $(STAMP)
	$(LOCK) --extra postgres -o requirements.lock
	$(LOCK) --all-extras -c requirements.lock -o requirements-dev.lock

# The walkthrough's screenshots (docs/images/), taken by the browser test on the suite's own mesh.
walkthrough-images: install
	$(BIN)/pytest tests/integration/test_browser.py tests/integration/test_prometheus.py -k "browser or web_ui"
	$(BIN)/pytest --cluster tests/cluster/test_topology.py -k consul_ui
	mkdir -p docs/images && cp var/test/screenshots/*.png var/test-cluster/screenshots/*.png docs/images/

clean: down
	rm -rf var
