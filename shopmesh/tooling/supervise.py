"""The process manager: supervisord runs every component, one log file each; this module renders its
configuration and talks to it over its XML-RPC socket."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
import xmlrpc.client
from collections.abc import Mapping, Sequence
from configparser import ConfigParser
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from supervisor.xmlrpc import SupervisorTransport

from shopmesh.runtime.settings import PROJECT_ROOT, Settings

#: State and secrets under var/ are readable by their owner only: every file the mesh's processes create is made
#: with this umask (the CLI's own and supervisord's, which its programs inherit).
UMASK = 0o077


def owner_only(tree: Path) -> None:
    """Take the group's and others' bits off everything under tree: for a var/ made before the umask was set.

    What another user owns there (the cluster's PostgreSQL, run as the postgres user when this is root) is left to
    that user, and the folders above it keep only the others' right to pass through, not to list or read."""
    if not tree.exists():
        return
    me = os.geteuid()
    paths = [path for path in [tree, *tree.rglob("*")] if not path.is_symlink()]
    theirs = {path for path in paths if owner_of(path) != me}
    passages = {above for path in theirs for above in path.parents}
    for path in paths:
        if path in theirs or any(above in theirs for above in path.parents):
            continue
        mode = path.stat().st_mode & 0o7777
        keep = 0o701 if path in passages else 0o700
        if mode & ~keep & 0o077:
            path.chmod(mode & keep)


def owner_of(path: Path) -> int:
    return path.lstat().st_uid


@dataclass(frozen=True)
class ProgramSpec:
    """What supervisord needs to run one process. `secrets` names environment variables whose values must not be
    written into supervisord's configuration file: the file refers to them, and supervisord is started with their
    values in its environment."""

    name: str
    argv: Sequence[str]
    env: Mapping[str, str] = field(default_factory=dict)
    stop_seconds: int = 30
    secrets: Mapping[str, str] = field(default_factory=dict)
    directory: Path | None = None  # where it starts; by default the checkout
    stop_signal: str = "TERM"  # PostgreSQL stops at once on INT; on TERM it waits for its clients to leave


def _escape(value: str) -> str:
    # supervisord expands %(name)s in its values, so a literal % is written %%.
    return value.replace("%", "%%")


def render_config(settings: Settings, programs: Sequence[ProgramSpec]) -> str:
    config = ConfigParser(interpolation=None)
    config["unix_http_server"] = {"file": str(settings.run_dir / "supervisor.sock"), "chmod": "0700"}
    config["supervisord"] = {
        "logfile": str(settings.log_dir / "supervisord.log"),
        "pidfile": str(settings.run_dir / "supervisord.pid"),
        "childlogdir": str(settings.log_dir),
        "directory": str(PROJECT_ROOT),
        "identifier": "shopmesh",
        "umask": f"{UMASK:03o}",
    }
    config["rpcinterface:supervisor"] = {
        "supervisor.rpcinterface_factory": "supervisor.rpcinterface:make_main_rpcinterface"
    }
    config["supervisorctl"] = {"serverurl": f"unix://{settings.run_dir / 'supervisor.sock'}"}
    for position, program in enumerate(programs, start=1):
        section = {
            "command": _escape(shlex.join(program.argv)),
            # programs come in start order; supervisord stops the highest priority first and waits for it, so
            # shutting down is the start order reversed: the dataflows are gone before Kafka, say.
            "priority": str(position * 10),
            "directory": str(program.directory or PROJECT_ROOT),
            # The runtime starts each program once the programs it depends on are healthy.
            "autostart": "false",
            "autorestart": "true",
            "startsecs": "2",
            "startretries": "3",
            "stopasgroup": "true",
            "killasgroup": "true",
            "stopwaitsecs": str(program.stop_seconds),
            "stopsignal": program.stop_signal,
            "redirect_stderr": "true",
            "stdout_logfile": str(settings.log_dir / f"{program.name}.log"),
            "stdout_logfile_maxbytes": "20MB",
            "stdout_logfile_backups": "2",
        }
        environment = [f'{key}="{_escape(value)}"' for key, value in program.env.items()]
        # A secret's value stays in supervisord's environment; the file holds only a reference to it.
        environment += [f'{key}="%(ENV_{_secret_variable(key)})s"' for key in program.secrets]
        if environment:
            section["environment"] = ",".join(environment)
        config[f"program:{program.name}"] = section
    lines = []
    for name in config.sections():
        lines.append(f"[{name}]")
        lines.extend(f"{key}={value}" for key, value in config[name].items())
        lines.append("")
    return "\n".join(lines)


def _secret_variable(key: str) -> str:
    return f"SHOPMESH_SECRET_{key}"


class Supervisor:
    """A handle on this checkout's supervisord."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.config_path = settings.run_dir / "supervisord.conf"
        self.socket = settings.run_dir / "supervisor.sock"
        self.pidfile = settings.run_dir / "supervisord.pid"

    @property
    def rpc(self):
        transport = SupervisorTransport(None, None, f"unix://{self.socket}")
        return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport).supervisor

    def running(self) -> bool:
        if not self.socket.exists():
            return False
        try:
            return self.rpc.getState()["statename"] == "RUNNING"
        except (OSError, xmlrpc.client.Fault):
            return False

    def start_daemon(self, programs: Sequence[ProgramSpec]) -> None:
        """Write the configuration and start supervisord, or make a running one pick up the new configuration."""
        os.umask(UMASK)
        for folder in (self.settings.run_dir, self.settings.log_dir):
            folder.mkdir(parents=True, exist_ok=True)
        owner_only(self.settings.var_dir)
        self.config_path.write_text(render_config(self.settings, programs))
        if self.running():
            self.rpc.reloadConfig()
            known = {info["name"]: info for info in self.rpc.getAllProcessInfo()}
            wanted = {program.name for program in programs}
            for name in wanted - set(known):
                self.rpc.addProcessGroup(name)
            for name in set(known) - wanted:
                if known[name]["statename"] in ("RUNNING", "STARTING", "BACKOFF"):
                    self.rpc.stopProcess(name, True)
                self.rpc.removeProcessGroup(name)
            return
        secrets = {_secret_variable(key): value for program in programs for key, value in program.secrets.items()}
        subprocess.run(
            [sys.executable, "-m", "supervisor.supervisord", "-c", str(self.config_path)],
            check=True,
            env={**os.environ, **secrets},
        )
        deadline = time.monotonic() + 15
        while not self.running():
            if time.monotonic() > deadline:
                raise RuntimeError(f"supervisord did not start; see {self.settings.log_dir / 'supervisord.log'}")
            time.sleep(0.1)

    def state(self, name: str) -> str:
        return self.rpc.getProcessInfo(name)["statename"]

    def info(self) -> dict[str, dict]:
        if not self.running():
            return {}
        return {info["name"]: info for info in self.rpc.getAllProcessInfo()}

    def start(self, name: str) -> None:
        if self.state(name) not in ("RUNNING", "STARTING"):
            self.rpc.startProcess(name, False)

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self.settings.log_dir / f"{name}.log"
        if not path.exists():
            return f"(no log at {path})"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def shutdown(self, timeout: float = 90) -> None:
        """Stop every program and supervisord itself; wait until none of their processes is left."""
        if not self.running():
            return
        daemon = psutil.Process(int(self.pidfile.read_text()))
        family = [daemon, *daemon.children(recursive=True)]
        self.rpc.shutdown()
        _, alive = psutil.wait_procs(family, timeout=timeout)
        for straggler in alive:
            straggler.kill()
        psutil.wait_procs(alive, timeout=10)
