"""Bring-up order and failure handling, with stand-in processes: the real ones are in tests/integration."""

from __future__ import annotations

import re
from dataclasses import fields

import pytest

from shopmesh.runtime.catalogue import names
from shopmesh.runtime.settings import Settings
from shopmesh.tooling.bringup import BringUp, StackError
from shopmesh.tooling.install import Installed
from shopmesh.tooling.instances import ScaleError, instance_ports, plan_instances
from shopmesh.tooling.programs import Program, programs
from shopmesh.tooling.supervise import ProgramSpec, owner_only, render_config


class Processes:
    """Stands in for supervisord: a program becomes healthy a set number of polls after it was started."""

    def __init__(self, polls_to_health: dict[str, int | None]) -> None:
        self.polls_to_health = polls_to_health
        self.started: list[str] = []
        self.polls: dict[str, int] = {}

    def state(self, name: str) -> str:
        return "RUNNING" if name in self.started else "STOPPED"

    def start(self, name: str) -> None:
        self.started.append(name)

    def probe(self, name: str):
        def check(settings) -> str | None:
            if name not in self.started:
                return "not started"
            self.polls[name] = self.polls.get(name, 0) + 1
            needed = self.polls_to_health[name]
            return None if needed is not None and self.polls[name] >= needed else "still starting"

        return check

    def log_tail(self, name: str, lines: int = 30) -> str:
        return f"last words of {name}"


def _program(processes: Processes, name: str, requires=(), deadline=5.0) -> Program:
    return Program(
        name,
        lambda: ProgramSpec(name, ["true"]),
        ports={},
        probe=processes.probe(name),
        requires=requires,
        deadline=deadline,
    )


def _bring_up(processes: Processes, programs, reports=None) -> BringUp:
    return BringUp(Settings(), processes, programs, report=(reports or []).append, poll_seconds=0.001)


def test_a_program_starts_only_once_what_it_requires_is_healthy():
    processes = Processes({"consul": 3, "kafka": 1, "envoy": 1})
    programs = [
        _program(processes, "consul"),
        _program(processes, "kafka", ("consul",)),
        _program(processes, "envoy", ("consul",)),
    ]
    bring_up = _bring_up(processes, programs)
    bring_up.run()
    assert processes.started == ["consul", "kafka", "envoy"]
    assert processes.polls["consul"] == 3
    assert bring_up.healthy == {"consul", "kafka", "envoy"}


def test_a_program_that_never_becomes_healthy_fails_with_its_log_tail():
    processes = Processes({"consul": 1, "kafka": None})
    programs = [_program(processes, "consul"), _program(processes, "kafka", ("consul",), deadline=0.05)]
    with pytest.raises(StackError) as failure:
        _bring_up(processes, programs).run()
    assert "kafka failed to start: not healthy within 0 s (still starting)" in str(failure.value)
    assert "last words of kafka" in str(failure.value)


def test_a_program_that_requires_something_absent_is_reported():
    processes = Processes({"envoy": 1})
    with pytest.raises(StackError, match=r"envoy \(needs control-plane\)"):
        _bring_up(processes, [_program(processes, "envoy", ("control-plane",))]).run()


def test_a_healthy_running_program_is_not_started_again():
    processes = Processes({"consul": 1})
    processes.started.append("consul")
    reports: list[str] = []
    _bring_up(processes, [_program(processes, "consul")], reports).run()
    assert processes.started == ["consul"]
    assert not any(report.startswith("starting") for report in reports)


def test_the_supervisor_config_escapes_percent_signs_and_logs_each_program_to_its_own_file(tmp_path):
    settings = Settings(var_dir=tmp_path)
    text = render_config(settings, [ProgramSpec("kafka", ["java", "-Dx=50%"], {"OPTS": "a%b"})])
    assert "command=java -Dx=50%%" in text
    assert 'environment=OPTS="a%%b"' in text
    assert f"stdout_logfile={tmp_path / 'log' / 'kafka.log'}" in text
    assert "autostart=false" in text


def test_programs_are_stopped_in_the_reverse_of_their_start_order(tmp_path):
    # supervisord stops the highest priority first: the last started, as the dataflows before Kafka.
    text = render_config(
        Settings(var_dir=tmp_path), [ProgramSpec(name, ["true"]) for name in ("consul", "kafka", "analytics-totals-5s")]
    )
    priorities = dict(re.findall(r"\[program:(\S+)\]\n(?:.*\n)*?priority=(\d+)", text))
    assert sorted(priorities, key=lambda name: int(priorities[name])) == ["consul", "kafka", "analytics-totals-5s"]


def test_a_secret_is_referred_to_in_the_supervisor_config_never_written_into_it(tmp_path):
    text = render_config(
        Settings(var_dir=tmp_path),
        [ProgramSpec("keycloak", ["kc.sh"], {"USER": "admin"}, secrets={"PASSWORD": "s3cret-value"})],
    )
    assert "s3cret-value" not in text
    assert 'environment=USER="admin",PASSWORD="%(ENV_SHOPMESH_SECRET_PASSWORD)s"' in text
    assert "umask=077" in text  # every program's files are its owner's only


def test_owner_only_takes_the_group_and_other_bits_off_a_tree(tmp_path):
    (tmp_path / "data").mkdir(mode=0o755)
    (tmp_path / "data" / "keys.db").write_text("private")
    (tmp_path / "data" / "keys.db").chmod(0o644)
    (tmp_path / "data" / "link").symlink_to("/etc/hostname")
    owner_only(tmp_path)
    assert {path.name: path.stat().st_mode & 0o777 for path in (tmp_path / "data", tmp_path / "data" / "keys.db")} == {
        "data": 0o700,
        "keys.db": 0o600,
    }


def test_each_service_runs_service_processes_instances_on_ports_chosen_once(tmp_path):
    settings = Settings(var_dir=tmp_path, service_processes=3)
    planned = plan_instances(settings)
    assert {service: len(ports) for service, ports in planned.items()} == dict.fromkeys(names(), 3)
    assert planned["customer"][0] == settings.service_ports["customer"]
    extra = [port for ports in planned.values() for port in ports[1:]]
    assert len(set(extra)) == len(extra) == 2 * len(names())
    # A later bring-up keeps every instance on its port; fewer processes keep the first ports.
    assert plan_instances(settings) == planned
    assert instance_ports(Settings(var_dir=tmp_path, service_processes=2), "billing") == planned["billing"][:2]


def test_scale_sets_one_service_s_count_over_the_setting(tmp_path):
    settings = Settings(var_dir=tmp_path, service_processes=2)
    planned = plan_instances(settings, {"inventory": 1})
    assert {service: len(ports) for service, ports in planned.items()} == {**dict.fromkeys(names(), 2), "inventory": 1}
    assert len(plan_instances(settings, {"inventory": 4})["inventory"]) == 4
    with pytest.raises(ScaleError, match="unknown service 'payment'"):
        plan_instances(settings, {"payment": 2})
    with pytest.raises(ScaleError, match="at least one instance"):
        plan_instances(settings, {"billing": 0})


def test_a_scale_file_of_the_earlier_format_keeps_its_instances(tmp_path):
    settings = Settings(var_dir=tmp_path, service_processes=2)
    settings.run_dir.mkdir(parents=True)
    (settings.run_dir / "instances.json").write_text('{"inventory": [41001, 41002], "customer": []}')
    assert instance_ports(settings, "inventory") == [settings.service_ports["inventory"], 41001, 41002]
    assert instance_ports(settings, "customer") == [settings.service_ports["customer"]]
    assert len(instance_ports(settings, "billing")) == 1  # no port chosen yet: plan_instances chooses it
    assert len(plan_instances(settings)["billing"]) == 2


def test_the_default_process_count_follows_the_cpu_cores(monkeypatch):
    for cores, processes, workers in ((1, 1, 1), (2, 2, 1), (8, 4, 4), (None, 1, 1)):
        monkeypatch.setattr("os.cpu_count", lambda cores=cores: cores)
        settings = Settings()
        assert (settings.service_processes, settings.envoy_workers) == (processes, workers)


def test_listing_the_programs_runs_nothing(tmp_path, monkeypatch):
    """`shopmesh status` lists the programs: finding Java (which runs `java -version`) waits until they start."""
    ran = []
    monkeypatch.setattr("subprocess.run", lambda *args, **kwargs: ran.append(args))
    monkeypatch.setattr("subprocess.Popen", lambda *args, **kwargs: ran.append(args))
    settings = Settings(var_dir=tmp_path, service_processes=1)
    listed = programs(settings, Installed(*(tmp_path / field.name for field in fields(Installed))))
    assert ran == []
    assert [program.name for program in listed][:5] == ["consul", "kafka", "keycloak", "mesh-control-plane", "envoy"]
    billing = next(program for program in listed if program.name == "billing-service")
    assert set(billing.requires) == {"consul", "customer-service", "inventory-service"}
