"""The mesh catalogue is the one description of the services: what is derived from it follows it, and what must
stay literal (docker-compose.yml) is checked against it."""

from __future__ import annotations

import ast
import importlib
import json
import re
from pathlib import Path

import pytest
import yaml

from services.control_plane.service import ROUTED
from shopmesh.runtime import catalogue, permissions
from shopmesh.runtime.settings import PROJECT_ROOT, Settings
from shopmesh.tooling import gateway


def test_each_service_of_the_catalogue_is_a_grpc_service_of_the_protos_with_every_rpc_in_its_permissions():
    for service in catalogue.SERVICES:
        package = service.grpc_service.rsplit(".", 1)[0]  # shopmesh.customer.v1
        modules = [
            importlib.import_module(f"{package}.{path.stem}")
            for path in (PROJECT_ROOT / "shopmesh").joinpath(*package.split(".")[1:]).glob("*_pb2.py")
        ]
        [descriptor] = [
            module.DESCRIPTOR.services_by_name[name]
            for module in modules
            for name in module.DESCRIPTOR.services_by_name
            if module.DESCRIPTOR.services_by_name[name].full_name == service.grpc_service
        ]
        assert {method.name for method in descriptor.methods} == set(service.permissions), service.name
        assert set(service.internal_rpcs) <= set(service.permissions)


def test_each_service_has_its_package_and_a_port_setting():
    settings = Settings()
    for service in catalogue.SERVICES:
        assert (PROJECT_ROOT / "services" / service.name / "__main__.py").exists(), service.module
        assert settings.service_ports[service.name] == service.default_port
    ports = [service.default_port for service in catalogue.SERVICES]
    assert len(set(ports)) == len(ports)


def test_a_port_or_database_setting_for_a_service_that_does_not_exist_is_refused(monkeypatch):
    monkeypatch.setenv("SHOPMESH_SERVICE_PORTS__PAYMENT", "50060")
    with pytest.raises(ValueError, match="no such service: payment"):
        Settings()


def test_one_service_port_is_moved_by_its_own_variable(monkeypatch):
    monkeypatch.setenv("SHOPMESH_SERVICE_PORTS__BILLING", "50063")
    monkeypatch.setenv("SHOPMESH_DATABASE_URLS__INVENTORY", "postgresql+psycopg://localhost/inventory")
    settings = Settings()
    assert settings.service_ports == {"customer": 50051, "inventory": 50052, "billing": 50063, "analytics": 50054}
    assert settings.database_url("inventory") == "postgresql+psycopg://localhost/inventory"
    assert settings.database_url("customer").startswith("sqlite:///")


def test_the_control_plane_sends_envoy_every_routed_service():
    assert tuple(service.consul_name for service in catalogue.SERVICES if service.routed) == ROUTED


def test_the_permission_table_is_gathered_from_the_catalogue():
    assert set(permissions.PERMISSIONS) == {
        service.method(rpc) for service in catalogue.SERVICES for rpc in service.permissions
    }
    assert permissions.INTERNAL_METHODS == (
        "/shopmesh.inventory.v1.InventoryService/ReserveStock",
        "/shopmesh.inventory.v1.InventoryService/ReleaseStock",
    )


def _route_for(path: str) -> dict:
    """The first gateway route matching the gRPC path, as Envoy picks it."""
    for route in gateway.routes():
        match = route["match"]
        if "prefix" in match and path.startswith(match["prefix"]):
            return route
        if "safe_regex" in match and re.fullmatch(match["safe_regex"]["regex"], path):
            return route
    raise AssertionError(f"no route for {path}")


def test_the_gateway_routes_each_rpc_to_its_service_reads_and_writes_with_their_retries():
    for service in catalogue.routed():
        for rpc in service.permissions:
            route = _route_for(service.method(rpc))
            if rpc in service.internal_rpcs:
                assert route["direct_response"]["status"] == 404, rpc
                continue
            assert route["route"]["cluster"] == service.consul_name
            if rpc in service.stream_rpcs:  # runs until the caller leaves: no timeout, no retry
                assert route["route"] == {"cluster": service.consul_name, "timeout": "0s"}, rpc
                continue
            reads = rpc.startswith(service.read_prefixes)
            assert route["route"]["retry_policy"] is (gateway.READ_RETRIES if reads else gateway.WRITE_RETRIES), rpc
    assert _route_for("/shopmesh.payment.v1.PaymentService/Pay")["direct_response"]["status"] == 404


def test_the_rendered_bootstrap_transcodes_every_routed_service(tmp_path):
    gateway_filter = yaml.safe_load(gateway.write_bootstrap(Settings(var_dir=tmp_path), tmp_path).read_text())
    listener = gateway_filter["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    [transcoder] = [f for f in listener["http_filters"] if f["name"] == "envoy.filters.http.grpc_json_transcoder"]
    assert transcoder["typed_config"]["services"] == [service.grpc_service for service in catalogue.routed()]
    assert listener["route_config"]["virtual_hosts"][0]["routes"] == gateway.routes()


def test_docker_compose_runs_each_service_of_the_catalogue_after_what_it_depends_on():
    compose = yaml.safe_load((PROJECT_ROOT / "docker-compose.yml").read_text())["services"]
    for service in catalogue.SERVICES:
        entry = compose[service.consul_name]
        assert entry["command"] == ["python", "-m", service.module]
        assert entry["healthcheck"]["test"][-1] == str(service.default_port)
        assert {f"{other}-service" for other in service.depends_on} <= set(entry["depends_on"])
    running_services = {
        name for name, entry in compose.items() if str(entry.get("command", [""])[-1]).startswith("services.")
    }
    assert running_services == {s.consul_name for s in catalogue.SERVICES} | {"control-plane", "facturation-producer"}


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


@pytest.mark.parametrize("folder", ["shopmesh/runtime", "services", "dataflows"])
def test_nothing_the_processes_run_imports_the_operator_s_tooling(folder):
    offenders = {
        str(path.relative_to(PROJECT_ROOT)): sorted(
            name for name in _imports(path) if name.startswith("shopmesh.tooling")
        )
        for path in (PROJECT_ROOT / folder).rglob("*.py")
    }
    assert {path: names for path, names in offenders.items() if names} == {}


def test_the_console_s_files_are_served_at_their_names_with_a_strict_content_security_policy(tmp_path):
    (tmp_path / "index.html").write_text("<!doctype html>")
    (tmp_path / "app.js").write_text("'use strict';")
    (tmp_path / "notes.txt").write_text("not served")
    served = {route["match"]["path"]: route for route in gateway.console_routes(tmp_path)}
    assert set(served) == {"/", "/index.html", "/app.js", "/favicon.ico", "/permissions.json"}
    assert served["/"]["direct_response"]["body"]["inline_string"] == "<!doctype html>"
    headers = {h["header"]["key"]: h["header"]["value"] for h in served["/app.js"]["response_headers_to_add"]}
    assert headers["content-type"].startswith("text/javascript")
    assert "script-src 'self'" in headers["content-security-policy"]
    table = json.loads(served["/permissions.json"]["direct_response"]["body"]["inline_string"])
    assert table["shopmesh.analytics.v1.AnalyticsService/WatchWindowTotals"] == ["ADMIN", "BILLING_MANAGER"]


def test_the_console_s_secrets_are_files_of_their_owner_only(tmp_path, monkeypatch):
    monkeypatch.setenv("SHOPMESH_CONSOLE_HMAC_SECRET", "a-long-random-key")
    folder = gateway.write_secrets(Settings(), tmp_path / "secrets")
    assert folder.stat().st_mode & 0o777 == 0o700
    files = {path.name: path for path in folder.iterdir()}
    assert {name: path.stat().st_mode & 0o777 for name, path in files.items()} == {
        "console-client-secret.yaml": 0o600,
        "console-hmac-secret.yaml": 0o600,
    }
    [secret] = json.loads(files["console-hmac-secret.yaml"].read_text())["resources"]
    assert secret["generic_secret"]["secret"]["inline_string"] == "a-long-random-key"
    bootstrap = gateway.write_bootstrap(Settings(var_dir=tmp_path), tmp_path / "envoy").read_text()
    assert "a-long-random-key" not in bootstrap and "shopmesh-console-dev-secret" not in bootstrap
