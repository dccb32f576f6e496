"""The cluster topology as it runs: each engine clustered as README's "Scaling out" says, on the loopback hosts."""

from __future__ import annotations

import os
from collections import Counter

import httpx
from confluent_kafka.admin import AdminClient, ConfigResource
from playwright.sync_api import expect

from shopmesh.runtime.catalogue import SERVICES
from shopmesh.tooling import realm
from tests.conftest import shopmesh


def _catalog(mesh, name: str) -> list[dict]:
    return httpx.get(f"{mesh.consul_url}/v1/health/service/{name}", params={"passing": "true"}, timeout=5).json()


def test_status_lists_every_part_of_the_cluster_healthy(mesh):
    status = shopmesh("status")
    assert status.returncode == 0, status.stdout
    names = [line.split()[0] for line in status.stdout.splitlines()]
    for expected in ("consul-1", "consul-2", "consul-3", "consul", "kafka-1", "kafka-2", "kafka-3", "keycloak-db"):
        assert expected in names
    assert {"keycloak", "keycloak-2", "services-db", "mesh-control-plane", "mesh-control-plane-2"} <= set(names)
    assert {"analytics-totals-5s", "analytics-totals-5s-2", "billing-service", "billing-service-2"} <= set(names)


def test_consul_has_three_servers_one_leader_and_the_parts_register_with_a_client_agent(mesh):
    raft = httpx.get(f"{mesh.consul_url}/v1/operator/raft/configuration", timeout=5).json()
    servers = {server["Address"].split(":")[0]: server for server in raft["Servers"]}
    assert sorted(servers) == sorted(mesh.cluster_hosts)
    assert sum(server["Leader"] for server in servers.values()) == 1
    assert all(server["Voter"] for server in servers.values())
    members = httpx.get(f"{mesh.consul_url}/v1/agent/members", timeout=5).json()
    roles = {member["Addr"]: member["Tags"]["role"] for member in members if member["Status"] == 1}
    assert roles == {**dict.fromkeys(mesh.cluster_hosts, "consul"), mesh.host: "node"}
    self = httpx.get(f"{mesh.consul_url}/v1/agent/self", timeout=5).json()
    assert self["Config"]["Server"] is False  # the agent everything registers with is a client


def test_kafka_has_three_nodes_and_every_topic_on_all_of_them_with_two_in_sync_for_a_write(mesh):
    admin = AdminClient({"bootstrap.servers": mesh.kafka_bootstrap})
    metadata = admin.list_topics(timeout=10)
    assert sorted(broker.host for broker in metadata.brokers.values()) == sorted(mesh.cluster_hosts)
    wanted = [mesh.facturation_topic, mesh.total_5s_topic, mesh.total_by_customer_topic, mesh.dlq_topic]
    for topic in wanted:
        partitions = metadata.topics[topic].partitions.values()
        assert all(len(partition.replicas) == 3 and len(partition.isrs) == 3 for partition in partitions), topic
    described = admin.describe_configs([ConfigResource("topic", topic) for topic in wanted])
    for future in described.values():
        assert future.result()["min.insync.replicas"].value == "2"
    assert len(metadata.topics[mesh.facturation_topic].partitions) == 3


def test_two_instances_of_every_service_and_control_plane_run_on_different_hosts(mesh):
    for name in [service.consul_name for service in SERVICES] + ["mesh-control-plane"]:
        hosts = Counter(entry["Service"]["Address"] for entry in _catalog(mesh, name))
        assert hosts == Counter(mesh.instance_hosts), name


def test_both_control_planes_serve_the_same_snapshot(mesh):
    versions = set()
    for entry in _catalog(mesh, "mesh-control-plane"):
        service = entry["Service"]
        scraped = httpx.get(f"http://{service['Address']}:{service['Meta']['metrics_port']}/metrics", timeout=5).text
        versions |= {line for line in scraped.splitlines() if line.startswith("shopmesh_xds_snapshot_info")}
    assert len(versions) == 1, versions


def test_each_dataflow_runs_as_two_processes_on_two_hosts(mesh):
    for name in ("analytics-totals-5s", "analytics-totals-by-customer"):
        hosts = sorted(entry["Service"]["Address"] for entry in _catalog(mesh, name))
        assert hosts == sorted(mesh.instance_hosts), name


def test_both_keycloak_nodes_share_the_realm_on_postgresql_and_a_token_from_either_is_accepted(mesh):
    assert sorted(entry["Service"]["Address"] for entry in _catalog(mesh, "keycloak")) == sorted(mesh.keycloak_hosts)
    databases = {entry["Service"]["ID"]: entry["Service"]["Address"] for entry in _catalog(mesh, "postgres")}
    assert databases == {"keycloak-db": mesh.keycloak_database_host, "services-db": mesh.services_database_host}
    for host in mesh.keycloak_hosts:
        node = mesh.model_copy(update={"keycloak_host": host})
        token = realm.token(node, "user1")["access_token"]
        answer = httpx.get(f"{mesh.gateway_url}/v1/products", headers={"authorization": f"Bearer {token}"}, timeout=10)
        assert answer.status_code == 200, (host, answer.text)


def test_nothing_under_the_clusters_var_is_readable_by_group_or_others(mesh):
    """As in the single mesh (test_security), with one difference: PostgreSQL's folders belong to the postgres user
    when this is root, and the folders above them let others pass through to them, not list or read them."""
    exposed = []
    databases = [mesh.var_dir / "keycloak-db", mesh.var_dir / "services-db"]
    for path in [mesh.var_dir, *mesh.var_dir.rglob("*")]:
        if any(folder in path.parents for folder in databases):
            continue  # inside a database's folder, which no one else may enter (checked below)
        try:
            mode = path.lstat().st_mode & 0o777
        except FileNotFoundError:
            continue  # gone while the walk ran (a log rotated, a Kafka segment deleted)
        mine = path.lstat().st_uid == os.geteuid()
        allowed = 0o001 if path.is_dir() and mine and path in _passages(mesh) else 0
        if not path.is_symlink() and mode & 0o077 & ~allowed:
            exposed.append(f"{mode:o} {path}")
    assert exposed == []
    assert any((mesh.var_dir / "keycloak-db").iterdir()), "Keycloak's database is under var/"


def _passages(mesh) -> set:
    databases = [mesh.var_dir / "keycloak-db", mesh.var_dir / "services-db"]
    return {above for folder in databases for above in folder.parents}


def test_the_consul_ui_shows_three_servers_a_leader_and_the_client_agent(mesh, browser):
    page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    page.goto(f"{mesh.consul_url}/ui/dc1/nodes")
    for node in ("consul-1", "consul-2", "consul-3", "shopmesh"):
        expect(page.get_by_text(node, exact=True).first).to_be_visible(timeout=30_000)
    expect(page.get_by_text("Leader").first).to_be_visible()
    folder = mesh.var_dir / "screenshots"
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    shot = folder / "consul-cluster-nodes.png"
    page.screenshot(path=shot, full_page=True)
    shot.chmod(0o600)
