"""Generates the Python gRPC code and the descriptor set (for Envoy's transcoder) from protos/.

The output goes to build/generated/ (git-ignored), the one place every process imports it from; the
shopmesh package puts build/generated/shopmesh on its own search path, so the generated modules import as
shopmesh.<service>.v1.<file>_pb2.
"""

from __future__ import annotations

import filecmp
import shutil
import tempfile
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

from shopmesh.settings import PROJECT_ROOT

PROTOS = PROJECT_ROOT / "protos"
GENERATED = PROJECT_ROOT / "build" / "generated"
DESCRIPTOR_SET = GENERATED / "shopmesh.pb"
#: The REST API's OpenAPI 3 description, generated from the google.api.http annotations and kept in the repo
#: so that it can be read without building anything.
OPENAPI = PROTOS / "openapi.yaml"


class GenerationError(RuntimeError):
    """protoc rejected the protos; the message carries what it said."""


def proto_files() -> list[Path]:
    return sorted(PROTOS.rglob("*.proto"))


def _include_paths() -> list[str]:
    # google/api/*.proto from googleapis-common-protos, google/protobuf/*.proto from grpcio-tools.
    googleapis = Path(resources.files("google.api").joinpath("annotations.proto")).parent.parent.parent
    well_known = Path(resources.files("grpc_tools").joinpath("_proto"))
    return [str(PROTOS), str(googleapis), str(well_known)]


def generate(out: Path = GENERATED) -> Path:
    """Write *_pb2.py, *_pb2.pyi, *_pb2_grpc.py and the descriptor set into out, replacing what was there."""
    staging = Path(tempfile.mkdtemp(prefix="generated-", dir=out.parent if out.parent.exists() else None))
    try:
        _protoc(f"--python_out={staging}", f"--pyi_out={staging}", f"--grpc_python_out={staging}",
                f"--descriptor_set_out={staging / DESCRIPTOR_SET.name}", "--include_imports", "--include_source_info")
        for package in staging.rglob("*"):
            if package.is_dir() and package != staging / "shopmesh":
                (package / "__init__.py").touch()
        if out.exists():
            shutil.rmtree(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def stale_files(out: Path = GENERATED) -> list[str]:
    """Files of out that differ from what protos/ generates now (missing, changed or extra)."""
    with tempfile.TemporaryDirectory() as scratch:
        fresh = generate(Path(scratch) / "generated")
        return _differences(filecmp.dircmp(fresh, out)) if out.exists() else [str(out)]


def _differences(comparison: filecmp.dircmp) -> list[str]:
    found = [*comparison.left_only, *comparison.right_only, *comparison.diff_files, *comparison.funny_files]
    for sub in comparison.subdirs.values():
        found.extend(_differences(sub))
    return [name for name in found if name != "__pycache__"]


def _protoc(*args: str) -> None:
    if protoc.main(["grpc_tools.protoc", *(f"-I{path}" for path in _include_paths()), *args,
                    *(str(path.relative_to(PROTOS)) for path in proto_files())]) != 0:
        raise GenerationError("protoc failed on protos/ (its messages are printed above)")


def render_openapi(plugin: Path) -> str:
    """The OpenAPI description of the REST API, from gnostic's protoc-gen-openapi."""
    # The plugin is written in Go and insists on a Go package per file; these names appear nowhere in its output.
    go_packages = ",".join(f"M{path.relative_to(PROTOS)}=shopmesh.local/{path.parent.relative_to(PROTOS)}"
                           for path in proto_files())
    with tempfile.TemporaryDirectory() as out:
        _protoc(f"--plugin=protoc-gen-openapi={plugin}", f"--openapi_out={out}",
                f"--openapi_opt=title=shopmesh REST API,version=v1,default_response=false,{go_packages}")
        return (Path(out) / "openapi.yaml").read_text()


def write_openapi(plugin: Path) -> None:
    text = render_openapi(plugin)
    if not OPENAPI.exists() or OPENAPI.read_text() != text:
        OPENAPI.write_text(text)
