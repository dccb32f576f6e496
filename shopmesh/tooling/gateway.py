"""Envoy's bootstrap, rendered from envoy/bootstrap.yaml with the settings, the descriptor set generated from
protos/ and the RBAC policies of the permission table. The native runtime and docker-compose.yml both use it."""

from __future__ import annotations

import json
import shutil
import string
from pathlib import Path

from shopmesh.runtime import permissions
from shopmesh.tooling import codegen
from shopmesh.runtime.settings import PROJECT_ROOT, Settings

TEMPLATE = PROJECT_ROOT / "envoy" / "bootstrap.yaml"


def write_bootstrap(settings: Settings, folder: Path) -> Path:
    """Write folder/bootstrap.yaml and, beside it, the descriptor set it names; return the bootstrap's path."""
    folder.mkdir(parents=True, exist_ok=True)
    descriptor_set = folder / codegen.DESCRIPTOR_SET.name
    shutil.copyfile(codegen.DESCRIPTOR_SET, descriptor_set)
    bootstrap = folder / "bootstrap.yaml"
    bootstrap.write_text(string.Template(TEMPLATE.read_text()).substitute(
        host=settings.host, gateway_port=settings.gateway_port, admin_port=settings.envoy_admin_port,
        control_plane_host=settings.control_plane_address, control_plane_port=settings.control_plane_port,
        keycloak_host=settings.keycloak_address, keycloak_port=settings.keycloak_port,
        issuer=settings.keycloak_issuer, descriptor_set=descriptor_set,
        rbac_policies=json.dumps(permissions.rbac_policies()),
    ))
    return bootstrap
