"""What every process of the mesh imports: settings, errors, storage, auth, discovery, the gRPC server."""
