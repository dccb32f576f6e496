"""The cluster topology's own real cluster for its fault suite (`pytest --cluster tests/cluster`, run by `make test`):
three Consul servers and a client agent, three Kafka nodes, PostgreSQL, two Keycloak nodes and two of everything
else on 127.0.0.2-4, with its state under var/test-cluster/ and ports of its own (the single mesh's suite's moved
down by 8000), so that it touches neither a person's mesh or cluster nor the single mesh's suite."""

from __future__ import annotations

import os
from collections.abc import Iterator

import psutil
import pytest

from shopmesh.runtime.settings import PROJECT_ROOT, Settings, load
from shopmesh.tooling.supervise import Supervisor
from tests.conftest import TEST_MESH, running_mesh, wait_for
from tests.load import Stock

#: The single mesh suite's ports moved down by 8000 (20000-21901): clear of the contract's, of the single mesh
#: suite's, and of Linux's ephemeral ports (32768 and up), which a client's connection may hold at any moment.
TEST_CLUSTER = {
    **{key: str(int(value) - 8000) for key, value in TEST_MESH.items() if key.endswith("_PORT") or "PORTS__" in key},
    "SHOPMESH_TOPOLOGY": "cluster",
    "SHOPMESH_VAR_DIR": str(PROJECT_ROOT / "var" / "test-cluster"),
    "SHOPMESH_POSTGRES_PORT": "25432",
    "SHOPMESH_DATAFLOW_CLUSTER_PORT": "27100",
}
os.environ.update(TEST_CLUSTER)


@pytest.fixture(scope="session")
def mesh() -> Iterator[Settings]:
    """The cluster, brought up once for the session as `make up-cluster` does."""
    assert load().clustered
    yield from running_mesh()


@pytest.fixture(scope="session")
def supervisor(mesh) -> Supervisor:
    return Supervisor(mesh)


def pid(supervisor: Supervisor, program: str) -> int:
    return supervisor.rpc.getProcessInfo(program)["pid"]


def restarted(supervisor: Supervisor, program: str, killed: int, seconds: float = 120) -> int:
    """Wait until the process manager has started program again after its process killed died; its new pid."""

    def again() -> int | None:
        info = supervisor.rpc.getProcessInfo(program)
        return info["pid"] if info["statename"] == "RUNNING" and info["pid"] not in (0, killed) else None

    return wait_for(again, seconds, f"{program} to be started again")


@pytest.fixture
def stock(rest) -> Stock:
    """A fresh customer and a product with 10,000 units, and whether the stock taken equals what was billed."""
    return Stock(rest, 10000, "Cluster Tester")


def connected_to(process: int, port: int) -> set[str]:
    """The addresses a process has TCP connections open to on port."""
    return {
        connection.raddr.ip
        for connection in psutil.Process(process).net_connections(kind="tcp")
        if connection.raddr and connection.raddr.port == port and connection.status == psutil.CONN_ESTABLISHED
    }
