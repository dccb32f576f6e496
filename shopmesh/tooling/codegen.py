"""Generates the Python gRPC code and the descriptor set (for Envoy's transcoder) from protos/.

The Python modules go into the shopmesh package itself, one git-ignored package per proto package
(shopmesh/customer/v1/customer_service_pb2.py, with its .pyi stubs), so that they import as
shopmesh.<service>.v1.<file>_pb2 and editors and type checkers see them like any module. The descriptor set goes
to build/generated/shopmesh.pb.
"""

from __future__ import annotations

import filecmp
import shutil
import tempfile
from importlib import resources
from pathlib import Path

import yaml
from grpc_tools import protoc

from shopmesh.runtime.settings import PROJECT_ROOT

PROTOS = PROJECT_ROOT / "protos"
BUILD = PROJECT_ROOT / "build"
DESCRIPTOR_SET = BUILD / "generated" / "shopmesh.pb"
#: The REST API's OpenAPI 3 description, generated from the google.api.http annotations and kept in the repo
#: so that it can be read without building anything.
OPENAPI = PROTOS / "openapi.yaml"


class GenerationError(RuntimeError):
    """protoc rejected the protos; the message carries what it said."""


def proto_files() -> list[Path]:
    return sorted(PROTOS.rglob("*.proto"))


def generated_packages() -> list[str]:
    """The packages generated into shopmesh/: one per folder under protos/shopmesh/ (customer, inventory, …)."""
    return sorted(folder.name for folder in (PROTOS / "shopmesh").iterdir() if folder.is_dir())


def _include_paths() -> list[str]:
    # google/api/*.proto from googleapis-common-protos, google/protobuf/*.proto from grpcio-tools.
    googleapis = Path(str(resources.files("google.api").joinpath("annotations.proto"))).parent.parent.parent
    well_known = Path(str(resources.files("grpc_tools").joinpath("_proto")))
    return [str(PROTOS), str(googleapis), str(well_known)]


def generate(root: Path = PROJECT_ROOT) -> Path:
    """Write *_pb2.py, *_pb2.pyi and *_pb2_grpc.py into root/shopmesh/<package>/ and the descriptor set to
    root/build/generated/, replacing what was there; return root."""
    # Staged under build/, never in $TMPDIR: the renames into place must not cross file systems (a /tmp on tmpfs).
    (root / "build").mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="generating-", dir=root / "build"))
    try:
        _protoc(
            f"--python_out={staging}",
            f"--pyi_out={staging}",
            f"--grpc_python_out={staging}",
            f"--descriptor_set_out={staging / DESCRIPTOR_SET.name}",
            "--include_imports",
            "--include_source_info",
        )
        for package in (staging / "shopmesh").rglob("*"):
            if package.is_dir():
                (package / "__init__.py").touch()
        for name in generated_packages():
            target = root / "shopmesh" / name
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.exists():
                shutil.rmtree(target)
            (staging / "shopmesh" / name).rename(target)
        descriptor_set = root / DESCRIPTOR_SET.relative_to(PROJECT_ROOT)
        descriptor_set.parent.mkdir(parents=True, exist_ok=True)
        (staging / DESCRIPTOR_SET.name).replace(descriptor_set)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return root


def stale_files(root: Path = PROJECT_ROOT) -> list[str]:
    """Generated files under root that differ from what protos/ generates now (missing, changed or extra)."""
    with tempfile.TemporaryDirectory() as scratch:
        fresh = generate(Path(scratch))
        stale = []
        for name in generated_packages():
            if not (root / "shopmesh" / name).exists():
                stale.append(f"shopmesh/{name}")
                continue
            stale.extend(_differences(filecmp.dircmp(fresh / "shopmesh" / name, root / "shopmesh" / name)))
        descriptor_set = DESCRIPTOR_SET.relative_to(PROJECT_ROOT)
        if not (root / descriptor_set).exists() or not filecmp.cmp(
            fresh / descriptor_set, root / descriptor_set, shallow=False
        ):
            stale.append(DESCRIPTOR_SET.name)
        return stale


def _differences(comparison: filecmp.dircmp) -> list[str]:
    found = [*comparison.left_only, *comparison.right_only, *comparison.diff_files, *comparison.funny_files]
    for sub in comparison.subdirs.values():
        found.extend(_differences(sub))
    return [name for name in found if name != "__pycache__"]


def _protoc(*args: str) -> None:
    if (
        protoc.main(
            [
                "grpc_tools.protoc",
                *(f"-I{path}" for path in _include_paths()),
                *args,
                *(str(path.relative_to(PROTOS)) for path in proto_files()),
            ]
        )
        != 0
    ):
        raise GenerationError("protoc failed on protos/ (its messages are printed above)")


#: The error answers every operation may give, with the JSON body both the services' errors (google.rpc.Status,
#: through the transcoder) and Envoy's own (local_reply_config) have.
_ERRORS = {
    "400": "Bad input: a field, the JSON body or a query parameter is wrong; the message names it.",
    "401": "No token, or one that is invalid, expired, or not for this API.",
    "403": "The token is valid but lacks a role the permission table asks for this operation.",
    "503": "A service the operation needs is unavailable for the moment; retrying later may succeed.",
}
#: Errors of some operations only, by the last word of their operationId.
_ERRORS_BY_KIND = {
    "404": (
        "The resource named (in the path, or a customer or product of the body) does not exist.",
        ("Get", "Update", "Delete", "CreateBill"),
    ),
    "409": (
        "Another resource already has this unique value (a customer's email, whatever its case).",
        ("CreateCustomer", "UpdateCustomer"),
    ),
    "413": ("The request body is larger than the gateway accepts.", ("Create", "Update")),
}
_STATUS_SCHEMA = {
    "type": "object",
    "description": "An error: its gRPC status code and a message naming what is wrong.",
    "properties": {
        "code": {
            "type": "integer",
            "format": "int32",
            "description": "The gRPC status code (3 invalid argument, "
            "5 not found, 6 already exists, 7 permission denied, 9 failed precondition, 14 unavailable, "
            "16 unauthenticated).",
        },
        "message": {"type": "string", "description": "What is wrong, naming the field at fault."},
        "details": {"type": "array", "items": {"type": "object"}, "description": "Further details, if any."},
    },
    "required": ["code", "message"],
}


def add_error_answers(description: dict) -> dict:
    """Document each operation's error answers: generic tools then tell a documented 404 from an undocumented one."""
    description.setdefault("components", {}).setdefault("schemas", {})["Status"] = _STATUS_SCHEMA
    for operations in description["paths"].values():
        for operation in operations.values():
            rpc = operation["operationId"].split("_", 1)[1]
            errors = dict(_ERRORS)
            for code, (text, kinds) in _ERRORS_BY_KIND.items():
                if any(rpc.startswith(kind) or rpc == kind for kind in kinds):
                    errors[code] = text
            for code, text in sorted(errors.items()):
                operation["responses"][code] = {
                    "description": text,
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Status"}}},
                }
    return description


def render_openapi(plugin: Path) -> str:
    """The OpenAPI description of the REST API, from gnostic's protoc-gen-openapi, with the error answers."""
    # The plugin is written in Go and insists on a Go package per file; these names appear nowhere in its output.
    go_packages = ",".join(
        f"M{path.relative_to(PROTOS)}=shopmesh.local/{path.parent.relative_to(PROTOS)}" for path in proto_files()
    )
    with tempfile.TemporaryDirectory() as out:
        _protoc(
            f"--plugin=protoc-gen-openapi={plugin}",
            f"--openapi_out={out}",
            f"--openapi_opt=title=shopmesh REST API,version=v1,default_response=false,{go_packages}",
        )
        generated = yaml.safe_load((Path(out) / "openapi.yaml").read_text())
    header = (
        "# Generated from protos/ with gnostic's protoc-gen-openapi and shopmesh/codegen.py "
        "(the error answers):\n"
        "# `shopmesh install` writes it; do not edit it by hand.\n"
    )
    return header + yaml.safe_dump(add_error_answers(generated), sort_keys=False, width=120, allow_unicode=True)


def write_openapi(plugin: Path) -> None:
    text = render_openapi(plugin)
    if not OPENAPI.exists() or OPENAPI.read_text() != text:
        OPENAPI.write_text(text)
