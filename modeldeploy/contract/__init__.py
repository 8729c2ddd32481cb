"""The ModelDeployment contract: the types and names operator, pod and server agree on.

The ground floor: imports nothing of this project and neither Kubernetes nor FastAPI.
"""
