"""The generic model server and the signed-parameters tooling its pods run."""
