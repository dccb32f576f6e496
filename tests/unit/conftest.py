"""The unit tests run on the settings' defaults: whatever SHOPMESH_* variables the shell (or the suite's own mesh,
tests/conftest.py) sets are cleared for each of them."""

import os

import pytest


@pytest.fixture(autouse=True)
def default_settings(monkeypatch):
    for name in [name for name in os.environ if name.startswith("SHOPMESH_")]:
        monkeypatch.delenv(name)
