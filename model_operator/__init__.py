"""The ModelDeployment operator: render, apply and report on a model's Kubernetes objects."""
