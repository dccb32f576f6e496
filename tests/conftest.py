"""The real mesh, started once per test session (as `make up` does) and stopped at the end if the session
started it."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from shopmesh.settings import Settings, load
from shopmesh.supervise import Supervisor
from tests.auth import Tokens

SHOPMESH = [sys.executable, "-m", "shopmesh.cli"]


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


@pytest.fixture(scope="session")
def mesh() -> Settings:
    settings = load()
    already_running = Supervisor(settings).running()
    started = shopmesh("up")
    if started.returncode != 0:
        pytest.fail(f"shopmesh up failed:\n{started.stdout}\n{started.stderr}")
    yield settings
    if not already_running:
        shopmesh("down")


@pytest.fixture(scope="session")
def project_root() -> Path:
    return Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def tokens(mesh) -> Tokens:
    return Tokens(mesh)
