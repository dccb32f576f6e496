"""The real mesh, started once per test session (as `make up` does) and stopped at the end if the session
started it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from shopmesh.settings import Settings, load
from shopmesh.supervise import Supervisor
from tests.auth import Tokens

SHOPMESH = [sys.executable, "-m", "shopmesh.cli"]


def shopmesh(*args: str, env: dict[str, str] | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run the CLI as a user would, capturing what it prints."""
    return subprocess.run([*SHOPMESH, *args], capture_output=True, text=True, env=env, timeout=timeout, check=False)


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
