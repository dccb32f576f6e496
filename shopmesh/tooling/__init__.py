"""The operator's tooling: install the components, supervise and bring up the mesh, the shopmesh CLI."""
