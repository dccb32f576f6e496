"""The cluster's fault suite: nodes killed (kill -9) under a bounded load of reads through the gateway, bills, and
the producer's invoices; each test counts what was lost or failed, and asserts none was.

Every killed process is started again by the process manager by itself, as a host's service manager would."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter

import httpx
import pytest
from keycloak.exceptions import KeycloakError

from shopmesh.runtime.catalogue import part
from shopmesh.runtime.invoices import iso_millis
from shopmesh.tooling import health, realm
from shopmesh.tooling.instances import free_port
from shopmesh.tooling.programs import on_host
from tests.cluster import totals
from tests.cluster.conftest import connected_to, pid, restarted
from tests.conftest import wait_for
from tests.kafka_topics import invoice_ids, read_topic
from tests.load import BillLoop, GetLoop

PRODUCER = "facturation-producer"


def _registrations(mesh) -> set[str]:
    """The id of every service instance in Consul's catalogue (as the servers hold it)."""
    names = httpx.get(f"{mesh.consul_url}/v1/catalog/services", timeout=5).json()
    return {
        entry["ServiceID"]
        for name in names
        for entry in httpx.get(f"{mesh.consul_url}/v1/catalog/service/{name}", timeout=5).json()
    }


def _leader(mesh) -> str:
    """The host of the Consul servers' leader, '' while there is none."""
    try:
        answer = httpx.get(f"{mesh.consul_url}/v1/status/leader", timeout=2)
    except httpx.HTTPError:
        return ""
    return answer.json().split(":")[0] if answer.status_code == 200 else ""


def _term(mesh, server: str) -> int:
    """The raft term a Consul server is in (0 while it does not answer): each election starts a new one."""
    try:
        own = httpx.get(f"http://{server}:{mesh.consul_http_port}/v1/agent/self", timeout=2).json()
    except (httpx.HTTPError, ValueError):
        return 0
    return int(own["Stats"]["raft"]["term"])


def _voters(mesh) -> int:
    try:
        raft = httpx.get(f"{mesh.consul_url}/v1/operator/raft/configuration", timeout=2).json()
    except (httpx.HTTPError, ValueError):
        return 0
    return sum(server["Voter"] for server in raft["Servers"])


def _gateway_requests_to(mesh, cluster: str, address: str) -> int:
    """How many requests Envoy has sent to one endpoint of a cluster, and had answered."""
    clusters = httpx.get(f"{mesh.envoy_admin_url}/clusters", params={"format": "json"}, timeout=5).json()
    for status in clusters.get("cluster_statuses", []):
        if status["name"] != cluster:
            continue
        for host in status.get("host_statuses", []):
            socket = host["address"]["socket_address"]
            if f"{socket['address']}:{socket['port_value']}" == address:
                return next((int(s.get("value", 0)) for s in host["stats"] if s["name"] == "rq_success"), 0)
    return 0


def test_killing_the_consul_leader_loses_no_registration_and_fails_no_read(mesh, supervisor, tokens, stock):
    before = _registrations(mesh)
    old = _leader(mesh)
    leader = f"consul-{mesh.cluster_hosts.index(old) + 1}"
    follower = next(host for host in mesh.cluster_hosts if host != old)
    term = _term(mesh, follower)
    # An instance started during the election, on the third host: it registers with its host's agent at once.
    host, port = mesh.cluster_hosts[2], free_port(mesh.cluster_hosts[2])
    environment = {**os.environ, **on_host(mesh, host), "SHOPMESH_INSTANCE_PORT": str(port)}
    with GetLoop(mesh, stock.customer["id"], tokens) as reads, BillLoop(mesh, tokens, stock) as bills:
        time.sleep(2)
        killed = pid(supervisor, leader)
        os.kill(killed, signal.SIGKILL)
        newcomer = subprocess.Popen(
            [sys.executable, "-m", part("customer").module],
            env=environment,
            # Its log beside the cluster's, its owner's only like the rest of var/.
            stdout=os.fdopen(
                os.open(mesh.log_dir / f"customer-service-{host}-{port}.log", os.O_WRONLY | os.O_CREAT, 0o600), "w"
            ),
            stderr=subprocess.STDOUT,
        )
        try:
            # A new term with a leader: the killed server, back at once, may win it again.
            wait_for(lambda: _term(mesh, follower) > term and _leader(mesh), 60, "a leader elected in a new term")
            wait_for(
                lambda: _gateway_requests_to(mesh, "customer-service", f"{host}:{port}") > 0,
                120,
                "the gateway to route reads to the instance started during the election",
            )
            restarted(supervisor, leader, killed)
            wait_for(lambda: _voters(mesh) == 3, 120, "the killed server to rejoin as a voter")
            time.sleep(2)
        finally:
            newcomer.terminate()
            newcomer.wait(30)
    wait_for(
        lambda: set(bills.ids) <= set(invoice_ids(read_topic(mesh, mesh.facturation_topic))),
        120,
        "every bill's event on FACTURATION",
    )
    after = _registrations(mesh)
    assert before <= after, f"registrations lost: {sorted(before - after)}"
    assert reads.statuses and Counter(reads.statuses) == {200: len(reads.statuses)}, reads.failures
    assert bills.statuses and bills.outcomes() == {200: len(bills.statuses)}, bills.failures


def _log_lines(mesh, program: str) -> list[str]:
    return (mesh.log_dir / f"{program}.log").read_text(errors="replace").splitlines()


def _stop_producer(mesh, supervisor) -> int:
    """Stop the producer (it flushes what it holds) and return how many invoices it sent since it last started."""
    supervisor.rpc.stopProcess(PRODUCER, True)
    for line in reversed(_log_lines(mesh, PRODUCER)):
        if found := re.search(r"stopping after (\d+) invoices", line):
            return int(found.group(1))
    raise AssertionError(f"the producer's log does not say how many invoices it sent: {mesh.log_dir}")


def _settled_totals_are_exact(mesh) -> None:
    """With nothing more being produced: once each customer's running total counts all of its invoices on
    FACTURATION, every total is exact to the cent, and so is every 5-second window the dataflow closed."""

    def counted_all() -> totals.Expected | None:
        found = totals.expected(mesh)
        counts = {name: count for name, (_, count) in found.by_customer.items()}
        return found if counts == totals.customer_counts(mesh) else None

    wanted = wait_for(counted_all, 240, "the customers' running totals to count every invoice on FACTURATION")
    by_customer = totals.latest(mesh, mesh.total_by_customer_topic)
    assert {name: (record["total"], record["count"]) for name, record in by_customer.items()} == totals.as_records(
        wanted.by_customer
    )
    windows = totals.latest(mesh, mesh.total_5s_topic)
    closed = {start: (record["total"], record["count"]) for start, record in windows.items()}
    expected = totals.as_records(wanted.windows)
    assert closed == {start: expected[start] for start in closed}
    # Every window well behind the latest invoice has closed (the last ones wait for later invoices).
    old = {start for start in expected if start < iso_millis(wanted.latest - totals.WINDOW_GRACE)}
    assert old <= set(closed), sorted(old - set(closed))[:5]


@pytest.fixture
def producing(mesh, supervisor) -> set[str]:
    """The producer, started afresh for the test so that its log counts what it sends in it (left running); the
    invoice ids on FACTURATION before it started."""
    supervisor.rpc.stopProcess(PRODUCER, True)
    before = set(invoice_ids(read_topic(mesh, mesh.facturation_topic)))
    supervisor.rpc.startProcess(PRODUCER, True)
    wait_for(lambda: health.consul_passing(mesh, _producer_id(mesh)) is None, 60, "the producer to run")
    yield before
    if supervisor.rpc.getProcessInfo(PRODUCER)["statename"] != "RUNNING":
        supervisor.rpc.startProcess(PRODUCER, True)


def _producer_id(mesh) -> str:
    from services import facturation_producer

    return facturation_producer.service_id(mesh)


def _in_sync(mesh) -> bool:
    from confluent_kafka.admin import AdminClient

    metadata = AdminClient({"bootstrap.servers": mesh.kafka_bootstrap}).list_topics(timeout=10)
    return all(
        len(partition.isrs) == len(partition.replicas) == 3
        for topic in metadata.topics.values()
        for partition in topic.partitions.values()
    )


def test_killing_a_kafka_broker_loses_no_invoice_and_the_totals_stay_exact(mesh, supervisor, tokens, stock, producing):
    before = producing
    with BillLoop(mesh, tokens, stock, pause=0.3) as bills:
        time.sleep(5)
        killed = pid(supervisor, "kafka-2")
        os.kill(killed, signal.SIGKILL)
        time.sleep(15)  # bills and invoices go on with two brokers of three
        restarted(supervisor, "kafka-2", killed)
        wait_for(
            lambda: health.kafka_metadata(mesh, f"{mesh.cluster_hosts[1]}:{mesh.kafka_port}") is None, 120, "kafka-2"
        )
        wait_for(lambda: _in_sync(mesh), 180, "every partition's three replicas back in sync")
        time.sleep(3)
    sent = _stop_producer(mesh, supervisor)
    assert bills.statuses and bills.outcomes() == {200: len(bills.statuses)}, bills.failures
    wait_for(
        lambda: set(bills.ids) <= set(invoice_ids(read_topic(mesh, mesh.facturation_topic))),
        180,
        "every bill's event on FACTURATION",
    )
    on_topic = Counter(invoice_ids(read_topic(mesh, mesh.facturation_topic)))
    new = {invoice: count for invoice, count in on_topic.items() if invoice not in before}
    assert all(count == 1 for count in new.values()), "written twice: " + str([i for i, c in new.items() if c > 1])
    assert len(set(new) - set(bills.ids)) == sent, "the producer's invoices on FACTURATION are not those it sent"
    assert not any("not delivered" in line for line in _log_lines(mesh, PRODUCER)[-200:])
    _settled_totals_are_exact(mesh)


def test_killing_one_process_of_each_dataflow_cluster_keeps_the_totals_exact(
    mesh, supervisor, tokens, stock, producing
):
    victims = ["analytics-totals-5s-2", "analytics-totals-by-customer"]
    with BillLoop(mesh, tokens, stock, pause=0.5):
        time.sleep(8)
        killed = {victim: pid(supervisor, victim) for victim in victims}
        for process in killed.values():
            os.kill(process, signal.SIGKILL)
        for victim, process in killed.items():
            restarted(supervisor, victim, process)
        # Each dataflow's processes all back: both registered in Consul, their checks passing.
        for name in ("analytics-totals-5s", "analytics-totals-by-customer"):
            wait_for(
                lambda name=name: (
                    len(httpx.get(f"{mesh.consul_url}/v1/health/service/{name}", params={"passing": "true"}).json())
                    == 2
                ),
                120,
                f"both processes of {name} to pass their checks",
            )
        time.sleep(8)
    _stop_producer(mesh, supervisor)
    _settled_totals_are_exact(mesh)


def test_killing_an_instance_of_each_service_and_a_control_plane_fails_no_read_and_bills_go_on(
    mesh, supervisor, tokens, stock
):
    envoy = pid(supervisor, "envoy")
    serving = connected_to(envoy, mesh.control_plane_port)
    assert len(serving) == 1, serving  # one ADS stream, to one of the two control planes
    control_plane = "mesh-control-plane" if serving == {mesh.control_plane_hosts[0]} else "mesh-control-plane-2"
    victims = ["customer-service", "inventory-service-2", "billing-service", control_plane]
    with GetLoop(mesh, stock.customer["id"], tokens) as reads, BillLoop(mesh, tokens, stock) as bills:
        time.sleep(3)
        with bills.between():
            killed = {victim: pid(supervisor, victim) for victim in victims}
            for process in killed.values():
                os.kill(process, signal.SIGKILL)
        made_before = len(bills.ids)
        # Envoy's stream moves to the other control plane, which serves the same snapshot.
        wait_for(lambda: connected_to(envoy, mesh.control_plane_port) - serving, 60, "Envoy's ADS on the other")
        for victim, process in killed.items():
            restarted(supervisor, victim, process)
        for victim in victims:
            wait_for(lambda victim=victim: _healthy(mesh, supervisor, victim), 120, f"{victim} healthy again")
        time.sleep(3)
    assert len(bills.ids) > made_before + 10, "bills did not go on"
    assert reads.statuses and Counter(reads.statuses) == {200: len(reads.statuses)}, reads.failures
    assert bills.outcomes() == {200: len(bills.statuses)}, bills.failures
    wait_for(lambda: stock.taken() == stock.billed() == len(bills.ids), 60, "stock taken to equal what was billed")
    wait_for(
        lambda: set(bills.ids) <= set(invoice_ids(read_topic(mesh, mesh.facturation_topic))),
        120,
        "every bill's event on FACTURATION",
    )


def _healthy(mesh, supervisor, program: str) -> bool:
    from shopmesh.tooling.install import locations
    from shopmesh.tooling.programs import programs

    wanted = next(p for p in programs(mesh, locations(mesh)) if p.name == program)
    return wanted.probe(mesh) is None


def test_restarting_keycloaks_database_needs_no_keycloak_restart_and_keeps_issued_tokens(
    mesh, supervisor, tokens, stock
):
    keycloaks = {node: pid(supervisor, node) for node in ("keycloak", "keycloak-2")}
    issued = realm.token(mesh, "user1")["access_token"]
    with GetLoop(mesh, stock.customer["id"], tokens) as reads:
        supervisor.rpc.stopProcess("keycloak-db", True)
        try:
            time.sleep(3)
            # The database is away: tokens issued before still work, as the gateway and services hold its keys.
            during = httpx.get(
                f"{mesh.gateway_url}/v1/products", headers={"authorization": f"Bearer {issued}"}, timeout=10
            )
            refused = _sign_in(mesh) is None
        finally:
            supervisor.rpc.startProcess("keycloak-db", True)
        wait_for(lambda: health.postgres_accepting(mesh, mesh.keycloak_database_host) is None, 60, "PostgreSQL back")
        signed_in = wait_for(lambda: _sign_in(mesh), 120, "a sign-in at each Keycloak node")
        time.sleep(2)
    after = httpx.get(f"{mesh.gateway_url}/v1/products", headers={"authorization": f"Bearer {issued}"}, timeout=10)
    assert during.status_code == 200, during.text
    assert after.status_code == 200, after.text
    assert refused, "Keycloak signed in without its database: the restart was not seen"
    assert all(signed_in)
    assert {node: pid(supervisor, node) for node in keycloaks} == keycloaks, "a Keycloak node was restarted"
    assert reads.statuses and Counter(reads.statuses) == {200: len(reads.statuses)}, reads.failures


def _sign_in(mesh) -> list[str] | None:
    """A fresh token by password grant from every Keycloak node, or None while one refuses."""
    found = []
    for host in mesh.keycloak_hosts:
        try:
            found.append(realm.token(mesh.model_copy(update={"keycloak_host": host}), "user1")["access_token"])
        except KeycloakError:  # Keycloak answers 5xx while its database is away
            return None
    return found
