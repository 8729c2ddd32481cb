"""The ModelDeployment operator: render, apply and report on a model's Kubernetes objects."""

from model_operator.conditions import set_condition
from model_operator.render import Manifest, ObjectRef, render_all
from model_operator.status import compute_status
from modeldeploy.contract.spec import ModelDeploymentSpec, SpecError, parse_spec

__all__ = [
    "Manifest",
    "ModelDeploymentSpec",
    "ObjectRef",
    "SpecError",
    "compute_status",
    "parse_spec",
    "render_all",
    "set_condition",
]
