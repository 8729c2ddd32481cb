"""The ModelDeployment spec as typed data: parse and check, nothing else.

The CRD (`crds/modeldeployment.yaml`) is the API users see and the API server enforces;
this module mirrors it so render code works on typed fields. It must not talk to the
cluster or render Kubernetes objects.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class SpecError(ValueError):
    """The spec cannot be rendered; retrying will not help until the user changes it."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class ModelRef(_Model):
    name: str = Field(min_length=1)
    version: str = Field(min_length=1)


class SecretKeyRef(_Model):
    secret_name: str = Field(alias="secretName", min_length=1)
    key: str = "public.pem"


class SecretRef(_Model):
    secret_name: str = Field(alias="secretName", min_length=1)


class Parameters(_Model):
    source: str = Field(pattern=r"^(s3://|https?://|file:///).+")
    signature: str | None = None
    public_key: SecretKeyRef = Field(alias="publicKey")
    credentials: SecretRef | None = None
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    max_bytes: int | None = Field(default=None, alias="maxBytes", ge=1 << 20, le=1 << 40)


class Policy(_Model):
    name: str = Field(min_length=1)
    when: str = Field(min_length=1)
    action: Literal["reject", "override", "clamp"]
    field: str | None = None
    min: float | None = None
    max: float | None = None
    value: Any = None
    expression: str | None = None
    message: str | None = None

    @model_validator(mode="after")
    def _action_arguments(self) -> Policy:
        if self.action == "clamp" and self.min is None and self.max is None:
            raise ValueError(f"policy {self.name!r}: clamp needs min and/or max")
        if self.action == "override" and (self.value is None) == (self.expression is None):
            raise ValueError(f"policy {self.name!r}: override needs exactly one of value or expression")
        return self


class Probes(_Model):
    max_load_seconds: int = Field(default=120, alias="maxLoadSeconds", ge=1, le=3600)
    period_seconds: int = Field(default=5, alias="periodSeconds", ge=1, le=60)


class CustomMetric(_Model):
    name: str = Field(min_length=1)
    target_average_value: str = Field(alias="targetAverageValue", min_length=1)


class Autoscaling(_Model):
    min_replicas: int = Field(default=1, alias="minReplicas", ge=1)
    max_replicas: int = Field(alias="maxReplicas", ge=1)
    target_cpu_utilization: int | None = Field(default=None, alias="targetCPUUtilization", ge=1, le=100)
    metric: CustomMetric | None = None

    @model_validator(mode="after")
    def _bounds(self) -> Autoscaling:
        if self.min_replicas > self.max_replicas:
            raise ValueError("autoscaling.minReplicas must be <= autoscaling.maxReplicas")
        if self.target_cpu_utilization is None and self.metric is None:
            raise ValueError("autoscaling needs targetCPUUtilization or metric")
        return self


class ServiceSpec(_Model):
    port: int = Field(default=80, ge=1, le=65535)
    type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = "ClusterIP"


class ModelDeploymentSpec(_Model):
    model: ModelRef
    image: str | None = None
    parameters: Parameters
    replicas: int = Field(default=1, ge=0)
    resources: dict[str, dict[str, str | int]] = Field(default_factory=dict)
    policies: tuple[Policy, ...] = ()
    max_request_bytes: int | None = Field(default=None, alias="maxRequestBytes", ge=1)
    probes: Probes = Probes()
    autoscaling: Autoscaling | None = None
    service: ServiceSpec = ServiceSpec()
    env: tuple[dict[str, Any], ...] = ()
    node_selector: dict[str, str] = Field(default_factory=dict, alias="nodeSelector")
    tolerations: tuple[dict[str, Any], ...] = ()

    @model_validator(mode="after")
    def _unique_policy_names(self) -> ModelDeploymentSpec:
        names = [policy.name for policy in self.policies]
        if len(names) != len(set(names)):
            raise ValueError("policy names must be unique")
        return self


def parse_spec(spec: dict[str, Any]) -> ModelDeploymentSpec:
    """Parse a ModelDeployment's `.spec`.

    Args:
        spec: the `.spec` mapping as stored by the API server.

    Returns:
        The typed spec.

    Raises:
        SpecError: the spec is invalid; the message names every offending field.
    """
    try:
        return ModelDeploymentSpec.model_validate(dict(spec))
    except ValidationError as err:
        problems = "; ".join(
            f"spec.{'.'.join(str(part) for part in e['loc'])}: {e['msg']}" if e["loc"] else f"spec: {e['msg']}"
            for e in err.errors()
        )
        raise SpecError(problems) from None
