"""shopmesh: a commerce back office as a gRPC service mesh."""

from pathlib import Path as _Path

# The code generated from protos/ (shopmesh.customer.v1, …) lives in build/generated/shopmesh: see codegen.py.
__path__.append(str(_Path(__file__).resolve().parent.parent / "build" / "generated" / "shopmesh"))
