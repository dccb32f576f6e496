"""shopmesh: a commerce back office as a gRPC service mesh."""
