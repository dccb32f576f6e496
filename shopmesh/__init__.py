"""shopmesh: a commerce back office as a gRPC service mesh.

Two layers: shopmesh.runtime is what every process of the mesh imports (settings, errors, storage, auth,
discovery, the gRPC server); shopmesh.tooling is the operator's (install, supervise, bring up, CLI) and is never
imported by the runtime. shopmesh.customer, .inventory and .billing are generated from protos/ (git-ignored)."""
