"""The cluster topology as planned, before anything runs: its settings, its programs (hosts, ports, what each
waits for, what each is told), the order it stops in, and the file modes around PostgreSQL's folder."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest

from shopmesh.runtime.settings import PROJECT_ROOT, Settings
from shopmesh.tooling import supervise
from shopmesh.tooling.bringup import stop_batches
from shopmesh.tooling.install import locations
from shopmesh.tooling.programs import programs


@pytest.fixture
def cluster(tmp_path) -> Settings:
    return Settings(topology="cluster", cache_dir=tmp_path / "cache")


def test_the_cluster_keeps_its_state_apart_and_names_every_broker_and_voter():
    cluster = Settings(topology="cluster")
    assert cluster.var_dir == PROJECT_ROOT / "var" / "cluster"
    assert Settings(topology="cluster", var_dir=Path("/elsewhere")).var_dir == Path("/elsewhere")
    assert cluster.kafka_bootstrap == "127.0.0.2:9092,127.0.0.3:9092,127.0.0.4:9092"
    assert cluster.kafka_voters == "1@127.0.0.2:9093,2@127.0.0.3:9093,3@127.0.0.4:9093"
    assert (cluster.kafka_replication, cluster.kafka_min_insync) == (3, 2)
    assert cluster.database_url("billing") == (
        "postgresql+psycopg://shopmesh:shopmesh-postgres-dev-only@127.0.0.3:5432/billing"
    )
    assert cluster.dataflow_addresses(1) == ["127.0.0.2:17101", "127.0.0.3:17101"]


def test_the_single_mesh_is_unchanged():
    single = Settings()
    assert single.var_dir == PROJECT_ROOT / "var"
    assert single.kafka_bootstrap == "127.0.0.1:9092"
    assert (single.kafka_replication, single.kafka_min_insync, single.kafka_voters) == (1, 1, "1@127.0.0.1:9093")
    assert single.database_url("billing").startswith("sqlite:///")
    assert single.dataflow_addresses(0) == []
    assert [program.name for program in programs(single, locations(single))][:3] == ["consul", "kafka", "keycloak"]


def test_settings_on_another_host_bind_there_and_reach_the_edge():
    node = Settings(topology="cluster").on("127.0.0.3")
    assert (node.host, node.advertise_address) == ("127.0.0.3", "127.0.0.3")
    assert (node.consul_url, node.keycloak_url) == ("http://127.0.0.1:8500", "http://127.0.0.1:8180")


def test_no_two_programs_of_the_cluster_claim_one_port_on_one_host(cluster):
    claimed = Counter(
        (program.host or cluster.host, port)
        for program in programs(cluster, locations(cluster))
        for port in program.ports.values()
    )
    assert [claim for claim, count in claimed.items() if count > 1] == []


def test_the_cluster_runs_each_engine_clustered_on_its_hosts(cluster):
    wanted = {program.name: program for program in programs(cluster, locations(cluster))}
    assert {name: wanted[name].host for name in ("consul-1", "consul-2", "consul-3")} == {
        "consul-1": "127.0.0.2",
        "consul-2": "127.0.0.3",
        "consul-3": "127.0.0.4",
    }
    assert [wanted[f"kafka-{node}"].host for node in (1, 2, 3)] == cluster.cluster_hosts
    assert (wanted["customer-service"].host, wanted["customer-service-2"].host) == ("127.0.0.2", "127.0.0.3")
    assert (wanted["keycloak"].host or cluster.host, wanted["keycloak-2"].host) == ("127.0.0.1", "127.0.0.3")
    assert (wanted["keycloak-db"].host, wanted["services-db"].host) == ("127.0.0.4", "127.0.0.3")
    argv = list(wanted["analytics-totals-5s-2"].command().argv)
    assert argv[-2:] == ["--process-id", "1"]
    assert set(wanted["consul"].requires) == {"consul-1", "consul-2", "consul-3"}
    assert {"kafka-1", "kafka-2", "kafka-3"} <= set(wanted["facturation-producer"].requires)
    assert "keycloak" in wanted["keycloak-2"].requires  # the first node imports the realm alone


def test_every_requirement_is_a_program_started_earlier(cluster):
    started: set[str] = set()
    for program in programs(cluster, locations(cluster)):
        assert set(program.requires) <= started, program.name
        started.add(program.name)


def test_every_program_is_told_the_topology_and_those_on_node_hosts_where_they_are(cluster):
    for program in programs(cluster, locations(cluster)):
        if program.name.startswith(("keycloak", "kafka")):
            continue  # their commands look for Java, which this machine may lack; they are not Python anyway
        spec = program.command()
        assert spec.env["SHOPMESH_TOPOLOGY"] == "cluster", program.name
        assert spec.env["SHOPMESH_VAR_DIR"] == str(cluster.var_dir)
        ours = spec.argv[0].endswith("python") or "python3" in spec.argv[0]
        if ours and program.host not in ("", cluster.host):
            assert spec.env["SHOPMESH_HOST"] == program.host, program.name
            assert spec.env["SHOPMESH_CONSUL_HOST"] == cluster.host, program.name


def test_each_engines_nodes_stop_together_after_everything_started_after_them(cluster):
    batches = stop_batches(programs(cluster, locations(cluster)))
    assert batches[0] == ["prometheus"]
    assert ["analytics-totals-by-customer-2", "analytics-totals-by-customer"] in batches
    assert ["kafka-3", "kafka-2", "kafka-1"] in batches
    assert batches[-1] == ["consul", "consul-3", "consul-2", "consul-1"]
    order = [name for batch in batches for name in batch]
    assert order.index("facturation-producer") < order.index("kafka-3")
    assert order.index("billing-service") < order.index("services-db")


def test_owner_only_leaves_another_users_folder_to_it_and_lets_others_only_pass_to_it(tmp_path, monkeypatch):
    var = tmp_path / "var"
    theirs = var / "cluster" / "keycloak-db"
    (theirs / "data").mkdir(parents=True)
    (theirs / "data" / "PG_VERSION").write_text("15")
    (var / "cluster" / "log").mkdir()
    (var / "cluster" / "log" / "kafka-1.log").write_text("")
    for path in [var, *var.rglob("*")]:
        path.chmod(0o777 if path.is_dir() else 0o666)
    me = os.geteuid()
    monkeypatch.setattr(supervise, "owner_of", lambda path: me + 1 if theirs in (path, *path.parents) else me)
    supervise.owner_only(var)
    assert {
        path.relative_to(tmp_path).as_posix(): oct(path.stat().st_mode & 0o777) for path in [var, *var.rglob("*")]
    } == {
        "var": "0o701",
        "var/cluster": "0o701",
        "var/cluster/keycloak-db": "0o777",  # the other user's own, as it made it
        "var/cluster/keycloak-db/data": "0o777",
        "var/cluster/keycloak-db/data/PG_VERSION": "0o666",
        "var/cluster/log": "0o700",
        "var/cluster/log/kafka-1.log": "0o600",
    }
