"""docker-compose.yml and the Dockerfile, checked without a Docker engine (there is none here): the compose file
against the Compose specification with Debian's docker-compose, pinned images, mounted files, the settings of the
Python processes, published ports, the Envoy bootstrap it renders (validated by the real Envoy), and the
Dockerfile with a linter from the npm registry."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from unittest import mock

import pytest
import yaml

from shopmesh.runtime.settings import PROJECT_ROOT, Settings, load
from shopmesh.tooling import gateway, install

COMPOSE_FILE = PROJECT_ROOT / "docker-compose.yml"
DOCKERFILE = PROJECT_ROOT / "Dockerfile"
#: The compose services that run the project's image, and the module each runs.
PYTHON_PROCESSES = {
    "control-plane": "services.control_plane",
    "customer-service": "services.customer",
    "inventory-service": "services.inventory",
    "billing-service": "services.billing",
    "facturation-producer": "services.facturation_producer",
    "analytics-totals-5s": "dataflows",
    "analytics-totals-by-customer": "dataflows",
    "provision": None,
    "envoy-bootstrap": None,
}


def _compose(*args: str, file: Path = COMPOSE_FILE) -> subprocess.CompletedProcess:
    install.ensure_tools({"docker-compose": "docker-compose"})
    # Without the caller's SHOPMESH_* variables, so that the file's own defaults are what is checked.
    env = {key: value for key, value in os.environ.items() if not key.startswith("SHOPMESH_")}
    return subprocess.run(
        ["docker-compose", "--project-directory", str(PROJECT_ROOT), "-f", str(file), *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=120,
    )


@pytest.fixture(scope="module")
def compose() -> dict:
    """The compose file as docker-compose resolves it: anchors merged, variables substituted."""
    resolved = _compose("config")
    assert resolved.returncode == 0, resolved.stderr
    return yaml.safe_load(resolved.stdout)


def test_the_compose_file_is_valid_against_the_compose_specification():
    checked = _compose("config", "--quiet")
    assert checked.returncode == 0, checked.stderr


def test_the_validator_does_reject_an_invalid_file(tmp_path):
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(
        COMPOSE_FILE.read_text().replace("condition: service_healthy", "condition: when_it_feels_like", 1)
    )
    rejected = _compose("config", "--quiet", file=broken)
    assert rejected.returncode != 0 and "when_it_feels_like" in rejected.stderr


def test_the_infrastructure_images_are_the_versions_the_native_run_installs(compose):
    images = {name: service.get("image") for name, service in compose["services"].items()}
    assert images["consul"] == f"hashicorp/consul:{install.CONSUL_VERSION}"
    assert images["kafka"] == f"apache/kafka:{install.KAFKA_VERSION}"
    assert images["keycloak"] == f"quay.io/keycloak/keycloak:{install.KEYCLOAK_VERSION}"
    assert images["envoy"] == f"envoyproxy/envoy:v{install.ENVOY_VERSION}"


def test_every_image_is_pinned_to_a_version(compose):
    images = [service["image"] for service in compose["services"].values()]
    images += re.findall(r"^ARG PYTHON_IMAGE=(\S+)", DOCKERFILE.read_text(), re.MULTILINE)
    for image in images:
        name, _, tag = image.rpartition(":")
        assert name and "/" not in tag and re.search(r"\d+\.\d+", tag), f"{image} is not pinned to a version"


def test_every_mounted_file_exists(compose):
    mounts = [volume for service in compose["services"].values() for volume in service.get("volumes", [])]
    binds = [mount.split(":")[0] for mount in mounts if mount.startswith("/")]
    assert binds, "the compose file mounts the native configuration files"
    for source in binds:
        assert Path(source).is_file(), f"{source} is mounted but does not exist"
    named = {mount.split(":")[0] for mount in mounts if not mount.startswith("/")}
    assert named == set(compose["volumes"])


def test_state_is_kept_in_volumes_across_restarts(compose):
    volumes = {
        name: [mount.split(":")[1] for mount in service.get("volumes", []) if not mount.startswith("/")]
        for name, service in compose["services"].items()
    }
    assert "/var/lib/kafka/data" in volumes["kafka"]
    assert "/var/lib/postgresql/data" in volumes["postgres"]
    assert "/var/lib/postgresql/data" in volumes["keycloak-postgres"]  # Keycloak's own state is there
    for dataflow in ("analytics-totals-5s", "analytics-totals-by-customer"):
        assert str(Settings(var_dir=Path("/var/lib/shopmesh")).recovery_dir) in volumes[dataflow]


def _settings_of(service: dict) -> Settings:
    environment = service["environment"]
    unknown = {
        key
        for key in environment
        if key.startswith("SHOPMESH_")
        and key.removeprefix("SHOPMESH_").split("__")[0].lower() not in Settings.model_fields
    }
    assert not unknown, f"variables no setting reads: {unknown}"
    # The image's own variables (Dockerfile ENV), then the service's, read as the process reads them.
    image_env = dict(re.findall(r"^\s+(SHOPMESH_\w+)=(\S+)", DOCKERFILE.read_text(), re.MULTILINE))
    with mock.patch.dict(os.environ, {**image_env, **environment}, clear=True):
        return Settings()


def _contract_settings() -> Settings:
    """The settings' defaults (the contract's ports), without the suite's own mesh's variables."""
    with mock.patch.dict(
        os.environ, {k: v for k, v in os.environ.items() if not k.startswith("SHOPMESH_")}, clear=True
    ):
        return Settings()


def test_every_python_process_is_configured_for_containers_through_the_environment(compose):
    for name, module in PYTHON_PROCESSES.items():
        service = compose["services"][name]
        assert service["image"] == "shopmesh:0.1.0" and service["build"]["context"] == str(PROJECT_ROOT), name
        if module:
            assert service["command"][:3] == ["python", "-m", module], name
        settings = _settings_of(service)
        assert (settings.host, settings.consul_url, settings.kafka_bootstrap, settings.keycloak_url) == (
            "0.0.0.0",
            "http://consul:8500",
            "kafka:9092",
            "http://keycloak:8180",
        ), name
        # Tokens are issued for the address users reach Keycloak at, as natively.
        assert settings.keycloak_issuer == "http://localhost:8180/realms/shopmesh"
        for service_name in ("customer", "inventory", "billing"):
            assert settings.database_url(service_name).startswith("postgresql+psycopg://shopmesh:"), name


def test_every_setting_is_either_set_or_defaulted():
    required = [name for name, field in Settings.model_fields.items() if field.is_required()]
    assert required == []


def test_only_the_gateway_consul_ui_and_keycloak_are_published_on_loopback(compose):
    # docker-compose writes them in the short syntax, host_ip:published:target/protocol.
    published = {
        (name, *(int(part) if part.isdigit() else part for part in port.removesuffix("/tcp").split(":")))
        for name, service in compose["services"].items()
        for port in service.get("ports", [])
    }
    defaults = _contract_settings()
    assert published == {
        ("envoy", "127.0.0.1", defaults.gateway_port, defaults.gateway_port),
        ("consul", "127.0.0.1", defaults.consul_http_port, defaults.consul_http_port),
        ("keycloak", "127.0.0.1", defaults.keycloak_port, defaults.keycloak_port),
    }


def test_services_can_be_scaled_no_fixed_host_port_or_container_name(compose):
    for name in ("customer-service", "inventory-service", "billing-service"):
        service = compose["services"][name]
        assert "ports" not in service and "container_name" not in service, name


def _waits_for(compose: dict, name: str) -> dict[str, str]:
    depends_on = compose["services"][name].get("depends_on", {})
    return {dependency: spec["condition"] for dependency, spec in depends_on.items()}


def test_the_start_order_is_that_of_make_run(compose):
    assert {key: _waits_for(compose, "billing-service")[key] for key in ("customer-service", "inventory-service")} == {
        "customer-service": "service_healthy",
        "inventory-service": "service_healthy",
    }
    assert _waits_for(compose, "envoy") == {
        "envoy-bootstrap": "service_completed_successfully",
        "control-plane": "service_healthy",
        "keycloak": "service_healthy",
    }
    assert _waits_for(compose, "control-plane") == {"consul": "service_healthy"}
    assert _waits_for(compose, "provision") == {"kafka": "service_healthy", "keycloak": "service_healthy"}
    for name in ("customer-service", "inventory-service", "facturation-producer", "analytics-totals-5s"):
        assert _waits_for(compose, name)["provision"] == "service_completed_successfully", name
    # Whatever a service waits to be healthy has a health check to be healthy by.
    awaited = {
        dependency
        for name in compose["services"]
        for dependency, condition in _waits_for(compose, name).items()
        if condition == "service_healthy"
    }
    assert awaited and all("healthcheck" in compose["services"][name] for name in awaited), awaited


def test_the_bootstrap_rendered_for_containers_is_valid_for_the_real_envoy(compose, tmp_path):
    settings = _settings_of(compose["services"]["envoy-bootstrap"])
    bootstrap = gateway.write_bootstrap(settings, tmp_path)
    text = bootstrap.read_text()
    clusters = {cluster["name"]: cluster for cluster in yaml.safe_load(text)["static_resources"]["clusters"]}

    def endpoints(cluster: str) -> list[tuple[str, int]]:
        sockets = [
            found["endpoint"]["address"]["socket_address"]
            for group in clusters[cluster]["load_assignment"]["endpoints"]
            for found in group["lb_endpoints"]
        ]
        return [(socket["address"], socket["port_value"]) for socket in sockets]

    assert endpoints("keycloak") == [("keycloak", 8180)]
    assert endpoints("mesh-control-plane") == [("control-plane", 18000)]
    assert "address: 127.0.0.1, port_value: 9901" in text  # the admin interface stays on loopback
    envoy = install.ensure(install.COMPONENTS["envoy"], settings.cache_dir) / "bin" / "envoy"
    checked = subprocess.run(
        [str(envoy), "--mode", "validate", "-c", str(bootstrap)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stdout[-3000:] + checked.stderr[-3000:]


def _lint(dockerfile: Path) -> subprocess.CompletedProcess:
    linter = install.ensure(install.DOCKERFILE_LINTER, load().cache_dir) / "node_modules" / ".bin" / "dockerfile-utils"
    return subprocess.run(
        [str(linter), "lint", str(dockerfile)], capture_output=True, text=True, check=False, timeout=60
    )


def test_the_dockerfile_passes_the_linter(tmp_path):
    if not shutil.which("npm"):
        install.ensure_tools({"npm": "npm"})
    linted = _lint(DOCKERFILE)
    assert (linted.returncode, linted.stdout.strip()) == (0, "")
    broken = tmp_path / "Dockerfile"
    broken.write_text(DOCKERFILE.read_text().replace("COPY --from=build /app /app", "COPY /app"))
    assert _lint(broken).returncode != 0  # the linter does read the file


def test_the_image_is_multi_stage_and_runs_as_a_user_without_privileges():
    text = DOCKERFILE.read_text()
    stages = re.findall(r"^FROM (\S+)", text, re.MULTILINE)
    users = re.findall(r"^USER (\S+)", text, re.MULTILINE)
    assert len(stages) >= 2
    assert users and users[-1] not in ("root", "0")
    assert text.rindex("USER ") > text.rindex("FROM ")
