"""HTTP adapters over the data plane: each module has `register(app, dataplane)`."""
