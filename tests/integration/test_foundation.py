"""Consul, Kafka, Keycloak and Envoy are the real things, running, reachable and on loopback only."""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import socket
import subprocess
import uuid

import httpx
import psutil
import pytest
from kafka.admin import KafkaAdminClient, NewTopic

from kafka import KafkaConsumer, KafkaProducer
from shopmesh.runtime import catalogue
from shopmesh.tooling import install, instances
from shopmesh.tooling.supervise import Supervisor
from tests.conftest import SHOPMESH, shopmesh


def test_consul_has_elected_a_leader(mesh):
    leader = httpx.get(f"{mesh.consul_url}/v1/status/leader").json()
    assert leader == f"{mesh.host}:{mesh.consul_server_port}"


def test_consul_is_the_mpl_licensed_release_and_says_so_in_its_ui(mesh):
    agent = httpx.get(f"{mesh.consul_url}/v1/agent/self").json()
    assert agent["Config"]["Version"] == install.CONSUL_VERSION
    assert install.CONSUL_COMMIT.startswith(agent["Config"]["Revision"]) and agent["Config"]["Revision"]
    ui = httpx.get(f"{mesh.consul_url}/ui/", follow_redirects=True).text
    assert f"CONSUL_VERSION: {install.CONSUL_VERSION}" in ui and "-dev" not in ui.split("CONSUL_VERSION: ")[1][:20]


def test_consul_serves_its_web_ui(mesh):
    answer = httpx.get(f"{mesh.consul_url}/ui/", follow_redirects=True)
    assert answer.status_code == 200
    assert "consul-ui" in answer.text


def test_kafka_gives_back_a_message_produced_to_a_fresh_topic(mesh):
    topic = f"foundation-{uuid.uuid4().hex}"
    admin = KafkaAdminClient(bootstrap_servers=mesh.kafka_bootstrap)
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    admin.close()
    producer = KafkaProducer(bootstrap_servers=mesh.kafka_bootstrap, acks="all")
    producer.send(topic, key=b"probe", value=b'{"hello": "kafka"}').get(timeout=30)
    producer.close()
    consumer = KafkaConsumer(
        topic, bootstrap_servers=mesh.kafka_bootstrap, auto_offset_reset="earliest", consumer_timeout_ms=20000
    )
    received = [(message.key, message.value) for message in consumer]
    consumer.close()
    assert received == [(b"probe", b'{"hello": "kafka"}')]


def test_keycloak_serves_the_shopmesh_realm_with_the_contract_issuer(mesh):
    discovery = httpx.get(f"{mesh.keycloak_url}/realms/shopmesh/.well-known/openid-configuration").json()
    # The contract's issuer, http://localhost:8180/realms/shopmesh, on the suite's own mesh's port.
    assert discovery["issuer"] == f"http://localhost:{mesh.keycloak_port}/realms/shopmesh" == mesh.keycloak_issuer
    assert discovery["jwks_uri"].startswith(f"http://localhost:{mesh.keycloak_port}/realms/shopmesh/")


def test_envoy_admin_is_live_and_runs_envoy_1_40(mesh):
    assert httpx.get(f"{mesh.envoy_admin_url}/ready").text.strip() == "LIVE"
    server_info = httpx.get(f"{mesh.envoy_admin_url}/server_info").json()
    assert server_info["version"].split("/")[1].startswith("1.40.")


def test_gateway_answers_unrouted_paths_with_a_json_404(mesh, tokens):
    answer = httpx.get(f"{mesh.gateway_url}/v1/nothing-here", headers=tokens.header("user1"))
    assert answer.status_code == 404
    assert answer.headers["content-type"] == "application/json"
    assert "message" in answer.json()


@pytest.mark.parametrize("service", ["consul", "kafka", "keycloak", "gateway"])
def test_component_is_registered_in_consul_with_passing_checks(mesh, service):
    entries = httpx.get(f"{mesh.consul_url}/v1/health/service/{service}").json()
    assert entries, f"{service} is not in Consul's catalog"
    statuses = {check["Name"]: check["Status"] for entry in entries for check in entry["Checks"]}
    assert statuses and set(statuses.values()) == {"passing"}, statuses


def test_every_component_listens_on_loopback_only(mesh):
    daemon = psutil.Process(int(Supervisor(mesh).pidfile.read_text()))
    family = {process.pid for process in daemon.children(recursive=True)}
    listening = [
        connection.laddr
        for connection in psutil.net_connections(kind="inet")
        if connection.pid in family and connection.status == psutil.CONN_LISTEN
    ]
    assert listening, "no listening socket found for the supervised processes"
    exposed = [address for address in listening if not _is_loopback(address.ip)]
    assert exposed == []


def _is_loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip)
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


def test_status_reports_every_part_healthy(mesh):
    status = shopmesh("status")
    assert status.returncode == 0, status.stdout + status.stderr
    lines = [line for line in status.stdout.splitlines() if line.strip()]
    services = [program for name in catalogue.names() for program in instances.instance_programs(mesh, name)]
    assert len(services) >= 3
    assert [line.split()[0] for line in lines] == [
        "consul",
        "kafka",
        "keycloak",
        "mesh-control-plane",
        "envoy",
        *services,
        "facturation-producer",
        "analytics-totals-5s",
        "analytics-totals-by-customer",
        "prometheus",
    ]
    assert all(" healthy " in line for line in lines), status.stdout


def test_up_again_keeps_the_running_processes(mesh):
    before = {name: info["pid"] for name, info in Supervisor(mesh).info().items()}
    again = shopmesh("up")
    assert again.returncode == 0, again.stderr
    assert {name: info["pid"] for name, info in Supervisor(mesh).info().items()} == before


def test_installed_components_are_complete_in_the_per_user_cache(mesh):
    for component in install.COMPONENTS.values():
        home = install.installed_path(component, mesh.cache_dir)
        if component.name == "consul" and install.consul_on_path():
            continue
        assert home is not None, f"{component.key} is not complete in {mesh.cache_dir}"
        assert not list(mesh.cache_dir.glob(f".{component.key}.partial-*"))


# --- the bad cases: a second, isolated mesh on free ports under its own var/ ---------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _isolated_env(tmp_path, **overrides: str) -> dict[str, str]:
    ports = [
        "consul_http",
        "consul_dns",
        "consul_server",
        "consul_serf_lan",
        "kafka",
        "kafka_controller",
        "keycloak",
        "gateway",
        "envoy_admin",
        "control_plane",
        "prometheus",
        "keycloak_management",
        "kafka_metrics",
    ]
    env = {**os.environ, "SHOPMESH_VAR_DIR": str(tmp_path / "var")}
    env.update({f"SHOPMESH_{name.upper()}_PORT": str(_free_port()) for name in ports})
    env.update({f"SHOPMESH_SERVICE_PORTS__{name.upper()}": str(_free_port()) for name in catalogue.names()})
    env.update(overrides)
    return env


def test_a_taken_port_is_named_with_the_process_holding_it(mesh, tmp_path):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        env = _isolated_env(tmp_path, SHOPMESH_KEYCLOAK_PORT=str(port))
        attempt = shopmesh("up", env=env, timeout=300)
    assert attempt.returncode == 1
    assert f"port {port} on 127.0.0.1 (Keycloak HTTP) is in use by pid {os.getpid()}" in attempt.stderr
    assert not (tmp_path / "var" / "run" / "supervisor.sock").exists(), "something was started anyway"


def test_a_part_that_never_becomes_healthy_shows_its_log_and_the_others_are_stopped(mesh, tmp_path):
    env = _isolated_env(tmp_path, SHOPMESH_KAFKA_HEAP="not-a-size")
    attempt = shopmesh("up", env=env, timeout=600)
    assert attempt.returncode == 1
    assert "kafka failed to start" in attempt.stderr
    assert "Invalid initial heap size" in attempt.stderr  # the JVM's own words, from kafka.log
    leftovers = [
        process.pid
        for process in psutil.process_iter(["cmdline"])
        if any(str(tmp_path) in part for part in (process.info["cmdline"] or []))
    ]
    assert leftovers == []


def test_down_of_a_mesh_that_is_not_running_says_so(tmp_path):
    result = shopmesh("down", env={**os.environ, "SHOPMESH_VAR_DIR": str(tmp_path / "var")})
    assert result.returncode == 0
    assert "nothing is running" in result.stderr


def test_run_brings_everything_up_and_ctrl_c_leaves_no_process_behind(mesh, tmp_path):
    env = _isolated_env(tmp_path)
    run = subprocess.Popen([*SHOPMESH, "run"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    try:
        for line in run.stdout:
            lines.append(line)
            if "press Ctrl-C" in line:
                break
        assert any("healthy in" in line for line in lines), "".join(lines)
        assert any(line.strip().startswith("envoy") and "http://" in line for line in lines), "".join(lines)
        # The command it suggests works as printed: products, not a 401.
        [suggested] = [line.split("Try: ", 1)[1].strip() for line in lines if "Try: " in line]
        tried = subprocess.run(
            ["bash", "-c", f"{suggested} -w '\\n%{{http_code}}'"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        body, _, status = tried.stdout.rpartition("\n")
        assert status == "200" and "products" in json.loads(body), tried.stdout + tried.stderr
        run.send_signal(signal.SIGINT)
        rest, _ = run.communicate(timeout=180)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 0, "".join(lines) + rest
    assert "stopped" in rest
    leftovers = [
        process.info["cmdline"]
        for process in psutil.process_iter(["cmdline"])
        if any(str(tmp_path) in part for part in (process.info["cmdline"] or []))
    ]
    assert leftovers == []
