"""A local Kubernetes control plane (and process-level node) built from source, for tests and the demo."""
