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
        args = [
            "grpc_tools.protoc",
            *(f"-I{path}" for path in _include_paths()),
            f"--python_out={staging}",
            f"--pyi_out={staging}",
            f"--grpc_python_out={staging}",
            f"--descriptor_set_out={staging / DESCRIPTOR_SET.name}",
            "--include_imports",
            "--include_source_info",
            *(str(path.relative_to(PROTOS)) for path in proto_files()),
        ]
        if protoc.main(args) != 0:
            raise GenerationError("protoc failed on protos/ (its messages are printed above)")
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
