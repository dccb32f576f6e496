"""The suite's own real mesh: started once per test session (as `make up` does), with its own state under
var/test/ and its own ports, so that the suite never touches the data of a mesh a person is running on the
contract's ports; stopped at the end if the session started it (SHOPMESH_TEST_KEEP_MESH=1 keeps it for the next
run)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from shopmesh.runtime.catalogue import SERVICES
from shopmesh.runtime.settings import PROJECT_ROOT, Settings, load
from shopmesh.tooling.supervise import Supervisor
from tests.auth import Bearer, Tokens

SHOPMESH = [sys.executable, "-m", "shopmesh.tooling.cli"]

#: Where the suite's mesh lives: set for the whole session, so the processes the tests start (the mesh itself,
#: extra instances, dataflows, the CLI) all find it. The unit tests clear every SHOPMESH_* variable.
TEST_MESH = {
    "SHOPMESH_VAR_DIR": str(PROJECT_ROOT / "var" / "test"),
    "SHOPMESH_CONSUL_HTTP_PORT": "28500",
    "SHOPMESH_CONSUL_DNS_PORT": "28600",
    "SHOPMESH_CONSUL_SERVER_PORT": "28300",
    "SHOPMESH_CONSUL_SERF_LAN_PORT": "28301",
    "SHOPMESH_KAFKA_PORT": "29092",
    "SHOPMESH_KAFKA_CONTROLLER_PORT": "29093",
    "SHOPMESH_KEYCLOAK_PORT": "28180",
    "SHOPMESH_GATEWAY_PORT": "28080",
    "SHOPMESH_ENVOY_ADMIN_PORT": "29901",
    "SHOPMESH_CONTROL_PLANE_PORT": "28000",
    "SHOPMESH_PROMETHEUS_PORT": "29090",
    "SHOPMESH_KEYCLOAK_MANAGEMENT_PORT": "29000",
    "SHOPMESH_KAFKA_METRICS_PORT": "29404",
    **{
        f"SHOPMESH_SERVICE_PORTS__{service.name.upper()}": str(28051 + number)
        for number, service in enumerate(SERVICES)
    },
}
os.environ.update(TEST_MESH)


def pytest_addoption(parser) -> None:
    parser.addoption(
        "--cluster",
        action="store_true",
        help="Run tests/cluster: the cluster topology's fault suite, on a cluster of its own (var/test-cluster/).",
    )


def pytest_ignore_collect(collection_path: Path, config) -> bool | None:
    # The cluster's suite starts a cluster of its own, so it runs in a session of its own: `make test` runs both.
    cluster = Path(__file__).parent / "cluster"
    if collection_path == cluster and not config.getoption("--cluster"):
        return True
    return None


def shopmesh(*args: str, env: dict[str, str] | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run the CLI as a user would, capturing what it prints."""
    return subprocess.run([*SHOPMESH, *args], capture_output=True, text=True, env=env, timeout=timeout, check=False)


def wait_for(condition, seconds: float, what: str):
    """Poll condition until it answers something true, or fail naming what did not happen in time."""
    deadline = time.monotonic() + seconds
    while not (result := condition()):
        assert time.monotonic() < deadline, f"timed out after {seconds} s waiting for {what}"
        time.sleep(0.1)
    return result


def running_mesh() -> Iterator[Settings]:
    """Bring up the mesh the environment names, as `make up` does; stop it at the end unless it was running
    already or SHOPMESH_TEST_KEEP_MESH=1."""
    settings = load()
    already_running = Supervisor(settings).running()
    started = shopmesh("up")
    if started.returncode != 0:
        pytest.fail(f"shopmesh up ({settings.topology}) failed:\n{started.stdout}\n{started.stderr}")
    yield settings
    if not already_running and os.environ.get("SHOPMESH_TEST_KEEP_MESH") != "1":
        shopmesh("down")


@pytest.fixture(scope="session")
def mesh() -> Iterator[Settings]:
    yield from running_mesh()


@pytest.fixture(scope="session")
def project_root() -> Path:
    return Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def tokens(mesh) -> Tokens:
    return Tokens(mesh)


@pytest.fixture(scope="session")
def rest(mesh, tokens):
    """The REST API through the gateway, as mesh-admin."""
    with httpx.Client(base_url=mesh.gateway_url, timeout=30, auth=Bearer(tokens)) as client:
        yield client


def email() -> str:
    """An email address no other test uses."""
    return f"{uuid.uuid4().hex[:12]}@example.com"


@pytest.fixture(scope="session")
def billing(mesh, tokens):
    """bill(quantity) makes a bill as the billing manager, for one customer and product made for the session."""
    admin = httpx.Client(base_url=mesh.gateway_url, timeout=30, auth=Bearer(tokens))
    customer = admin.post(
        "/v1/customers",
        json={"name": f"Streamer {uuid.uuid4().hex[:4]}", "email": f"{uuid.uuid4().hex[:10]}@example.com"},
    ).json()
    product = admin.post("/v1/products", json={"name": "Stream item", "price": "12.34", "quantity": 100}).json()
    client = httpx.Client(base_url=mesh.gateway_url, timeout=30, auth=Bearer(tokens, "billing-manager"))

    def bill(quantity: int = 1) -> dict:
        answer = client.post(
            "/v1/bills",
            json={"customerId": customer["id"], "items": [{"productId": product["id"], "quantity": quantity}]},
        )
        assert answer.status_code == 200, answer.text
        return answer.json()

    yield bill
    client.close()
    admin.close()


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium, headless, driven by Playwright, for one test module: Playwright's sync API keeps an event
    loop running in this thread while it is open, which later tests' asyncio.run() would trip over."""
    from playwright.sync_api import sync_playwright

    from shopmesh.tooling import install

    install.ensure_tools({"chromium": "chromium"})
    with sync_playwright() as playwright:
        # As root (CI here) Chromium's sandbox cannot start; the pages are the mesh's own.
        launched = playwright.chromium.launch(executable_path=shutil.which("chromium"), args=["--no-sandbox"])
        yield launched
        launched.close()
