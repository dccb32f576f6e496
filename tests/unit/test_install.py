"""The cache install is atomic: a failed, interrupted or killed install leaves nothing that looks installed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from shopmesh.tooling.install import MARKER, Component, InstallError, ensure, installed_path


def _component(build, version: str = "1.0") -> Component:
    return Component("widget", version, build, lambda home: (home / "bin" / "widget").read_text())


def _write_binary(home):
    (home / "bin").mkdir()
    (home / "bin" / "widget").write_text("widget 1.0")


def test_a_successful_install_is_renamed_into_place_with_its_marker(tmp_path):
    home = ensure(_component(_write_binary), tmp_path)
    assert home == tmp_path / "widget-1.0"
    assert (home / MARKER).read_text().splitlines() == ["widget-1.0", "widget 1.0"]
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == ["widget-1.0"]


def test_an_installed_component_is_not_built_again(tmp_path):
    builds = []

    def build(home):
        builds.append(home)
        _write_binary(home)

    ensure(_component(build), tmp_path)
    ensure(_component(build), tmp_path)
    assert len(builds) == 1


def test_a_failed_build_leaves_nothing_and_says_how_to_retry(tmp_path):
    def build(home):
        _write_binary(home)
        raise InstallError("downloading widget: connection reset")

    with pytest.raises(InstallError, match="connection reset") as failure:
        ensure(_component(build), tmp_path)
    assert "run the same command again" in str(failure.value)
    assert installed_path(_component(build), tmp_path) is None
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == []


def test_a_failed_verification_leaves_nothing(tmp_path):
    def verify(home):
        raise InstallError("widget --version reports 0.9")

    with pytest.raises(InstallError, match=r"0\.9"):
        ensure(Component("widget", "1.0", _write_binary, verify), tmp_path)
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == []


def test_an_interrupted_build_leaves_nothing(tmp_path):
    def build(home):
        _write_binary(home)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ensure(_component(build), tmp_path)
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == []


def test_an_install_killed_mid_build_is_cleaned_up_by_the_next_one(tmp_path):
    started = tmp_path / "build-started"
    script = textwrap.dedent(f"""
        import time
        from pathlib import Path
        from shopmesh.tooling.install import Component, ensure
        def build(home):
            (home / "half-written").write_text("x")
            Path({str(started)!r}).touch()
            time.sleep(60)
        ensure(Component("widget", "1.0", build, lambda home: ""), Path({str(tmp_path / "cache")!r}))
    """)
    victim = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.monotonic() + 30
    while not started.exists():
        assert time.monotonic() < deadline, "the build never started"
        time.sleep(0.05)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()

    cache = tmp_path / "cache"
    assert installed_path(_component(_write_binary), cache) is None
    assert list(cache.glob(".widget-1.0.partial-*")), "the killed build should have left its staging folder"

    home = ensure(_component(_write_binary), cache)
    assert (home / MARKER).exists()
    assert not (home / "half-written").exists()
    assert list(cache.glob(".widget-1.0.partial-*")) == []


def test_another_version_installs_beside_the_first(tmp_path):
    ensure(_component(_write_binary, "1.0"), tmp_path)
    ensure(_component(_write_binary, "2.0"), tmp_path)
    assert installed_path(_component(_write_binary, "1.0"), tmp_path)
    assert installed_path(_component(_write_binary, "2.0"), tmp_path)
