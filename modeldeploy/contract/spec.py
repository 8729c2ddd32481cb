"""The ModelDeployment spec as typed data: the one definition the CRD, the operator and the server share.

`make crds` generates the CRD's schema from these models (`modeldeploy.contract.crd`), so the
API server, the operator and the model server apply the same rules: descriptions become
`kubectl explain` text, `Field` bounds become schema bounds, and the `x-kubernetes-validations`
attached below are the CEL rules the API server checks at `kubectl apply`. The same checks run
in pydantic validators, so a spec the API server admits is one the operator can render and the
server can load. No Kubernetes or web framework imports here.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, WithJsonSchema, field_validator, model_validator

from modeldeploy.contract.rollout import Analysis, RolloutSpec
from modeldeploy.contract.validation import error_lines

QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
# A resource quantity: "500m", "1Gi" or a plain integer, as core/v1 accepts it.
Quantity = Annotated[
    int | Annotated[str, Field(pattern=QUANTITY_PATTERN)],
    WithJsonSchema({
        "x-kubernetes-int-or-string": True,
        "anyOf": [{"type": "integer"}, {"type": "string"}],
        "pattern": QUANTITY_PATTERN,
    }),
]
# A literal JSON value of any type, kept as written (null included).
AnyValue = Annotated[Any, WithJsonSchema({"x-kubernetes-preserve-unknown-fields": True, "nullable": True})]
# A nested core/v1 object the operator passes through unchanged.
OpaqueObject = Annotated[
    dict[str, Any], WithJsonSchema({"type": "object", "x-kubernetes-preserve-unknown-fields": True})
]


def rules(*pairs: tuple[str, str]) -> dict[str, Any]:
    """`x-kubernetes-validations` (CEL rule, message) for a model's or field's JSON schema."""
    return {"x-kubernetes-validations": [{"rule": rule, "message": message} for rule, message in pairs]}


class SpecError(ValueError):
    """The spec cannot be rendered; retrying will not help until the user changes it."""


class ContractModel(BaseModel):
    """Frozen, unknown keys refused, populated by the camelCase names users write."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class ModelRef(ContractModel):
    """Which model this is; shown in `kubectl get md` and the pods' labels."""

    name: str = Field(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
                      description="The model's name (a DNS label).")
    version: str = Field(min_length=1, max_length=63, pattern=r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$",
                         description="The model's version, e.g. 1.0.0.")


class SecretKeyRef(ContractModel):
    """The Secret key holding the PEM public key that must have signed the parameters."""

    secret_name: str = Field(alias="secretName", min_length=1, description="Name of a Secret in the same namespace.")
    key: str = Field(default="public.pem", min_length=1, pattern=r"^[-._a-zA-Z0-9]+$",
                     description="Key within the Secret.")


class SecretRef(ContractModel):
    """A Secret whose keys become the fetch container's environment (AWS_ACCESS_KEY_ID, AWS_ENDPOINT_URL, ...)."""

    secret_name: str = Field(alias="secretName", min_length=1, description="Name of a Secret in the same namespace.")


SOURCE_SCHEMES = ("s3://", "https://", "http://", "file:///")


class Parameters(ContractModel):
    """Where the signed model parameters come from and how to verify them."""

    source: str = Field(
        min_length=1,
        description="URI of the parameters directory or archive: s3://bucket/key, https://..., "
        "or file:///path (a volume on the node).",
        json_schema_extra=rules((
            " || ".join(f"(self.startsWith('{scheme}') && size(self) > {len(scheme)})" for scheme in SOURCE_SCHEMES),
            "source must be an s3://, https://, http:// or file:/// URI",
        )),
    )
    signature: str | None = Field(
        default=None, min_length=1,
        description="URI of the OpenSSF Model Signing signature. Default beside or inside the source.",
    )
    public_key: SecretKeyRef | None = Field(
        default=None, alias="publicKey",
        description="The key that must have signed the parameters, where no enforcing ModelTrustPolicy "
        "applies to the namespace (one that does decides the trusted signers instead).",
    )
    credentials: SecretRef | None = None
    sha256: str | None = Field(
        default=None, pattern=r"^[0-9a-f]{64}$",
        description="Pin of the signed manifest's sha256 (64 lowercase hex digits). Set at admission when "
        "absent, so every pod verifies exactly the signature that was admitted.",
    )
    max_bytes: int | None = Field(
        default=None, alias="maxBytes", ge=1 << 20, le=1 << 40,
        description="Most bytes fetch may download and unpack (archive and tree together); also sizes "
        "the parameters volume. Default 10 GiB.",
    )

    @field_validator("source")
    @classmethod
    def _known_scheme(cls, source: str) -> str:
        if not source.startswith(SOURCE_SCHEMES) or source in SOURCE_SCHEMES:
            raise ValueError("source must be an s3://, https://, http:// or file:/// URI")
        return source


class Policy(ContractModel):
    """A CEL rule the server applies to every prediction: reject it, override a field, or clamp a field."""

    # The API server's CEL cannot see `value` (untyped: any JSON value), so the rules that
    # involve it run in `_action_arguments` only: the operator reports them as SpecInvalid.
    model_config = ConfigDict(json_schema_extra=rules(
        ("self.action == 'override' || !has(self.expression)", "value and expression apply to override only"),
        ("self.action == 'clamp' || (!has(self.min) && !has(self.max))", "min and max apply to clamp only"),
        ("self.action != 'clamp' || has(self.min) || has(self.max)", "a clamp policy needs min and/or max"),
        ("!has(self.min) || !has(self.max) || self.min <= self.max", "min must be <= max"),
        ("self.action != 'reject' || !has(self.field)", "a reject policy takes no field"),
    ))

    name: str = Field(min_length=1, max_length=63, description="Unique name, reported when the policy fires.")
    when: str = Field(default="true", min_length=1, max_length=1024,
                      description='CEL condition over `input` and `prediction`, e.g. "prediction.price < 0.0".')
    action: Literal["reject", "override", "clamp"] = Field(description="What to do when the condition holds.")
    field: str | None = Field(default=None, min_length=1,
                              description="Output field for override/clamp. Default the model's only output.")
    min: float | None = Field(default=None, description="Lower clamp bound.")
    max: float | None = Field(default=None, description="Upper clamp bound.")
    value: AnyValue = Field(default=None, description=(
        "Literal replacement for override (any JSON value, null included; exactly one of value or "
        "expression, checked by the operator since CEL cannot inspect untyped fields)."
    ))
    expression: str | None = Field(default=None, min_length=1, max_length=1024,
                                   description="CEL expression computing the replacement for override.")
    message: str | None = Field(default=None, max_length=1024,
                                description="Message returned to the client when the policy fires.")

    @model_validator(mode="after")
    def _action_arguments(self) -> Policy:
        """The CEL rules above, in Python (`value: null` counts as given: override to null)."""
        has_value = "value" in self.model_fields_set
        if self.action != "override" and (has_value or self.expression is not None):
            raise ValueError(f"policy {self.name!r}: value and expression apply to override only, not {self.action}")
        if self.action == "override" and has_value == (self.expression is not None):
            raise ValueError(f"policy {self.name!r}: an override policy needs exactly one of value or expression")
        if self.action != "clamp" and (self.min is not None or self.max is not None):
            raise ValueError(f"policy {self.name!r}: min and max apply to clamp only, not {self.action}")
        if self.action == "clamp" and self.min is None and self.max is None:
            raise ValueError(f"policy {self.name!r}: a clamp policy needs min and/or max")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"policy {self.name!r}: min must be <= max")
        if self.action == "reject" and self.field is not None:
            raise ValueError(f"policy {self.name!r}: a reject policy takes no field")
        return self

    def document(self) -> dict[str, Any]:
        """The policy as written in `server.yaml`: camelCase keys, unset arguments left out."""
        return self.model_dump(by_alias=True, exclude_unset=True)


class VerificationSpec(ContractModel):
    """How the server keeps checking what it serves."""

    recheck_seconds: int = Field(
        default=300, alias="recheckSeconds", ge=0, le=86400,
        description="Re-verify the served files against the signed manifest this often (0: never). On a "
        "mismatch the pod stops answering readiness and ParametersVerified turns False.",
    )


class Probes(ContractModel):
    """Probe tuning for the server container."""

    max_load_seconds: int = Field(default=120, alias="maxLoadSeconds", ge=1, le=3600,
                                  description="How long loading the model may take; sizes the startup probe.")
    period_seconds: int = Field(default=5, alias="periodSeconds", ge=1, le=60,
                                description="Period of the startup and readiness probes (liveness uses twice this).")
    grpc_readiness: bool = Field(
        default=False, alias="grpcReadiness",
        description="Probe readiness with the gRPC health service (grpc.health.v1) on the gRPC port, as gRPC "
        "clients and load balancers see it, instead of HTTP; needs grpc in spec.protocols.")


class CustomMetric(ContractModel):
    """A custom per-pod metric (served by a metrics adapter) to scale on."""

    name: str = Field(min_length=1)
    target_average_value: str = Field(alias="targetAverageValue", min_length=1,
                                      description='Target per-pod average, a quantity such as "100" or "500m".')


class Autoscaling(ContractModel):
    """When set, a HorizontalPodAutoscaler owns the replica count."""

    model_config = ConfigDict(json_schema_extra=rules(
        ("self.minReplicas <= self.maxReplicas", "autoscaling.minReplicas must be <= autoscaling.maxReplicas"),
        ("has(self.targetCPUUtilization) || has(self.metric)", "autoscaling needs targetCPUUtilization or metric"),
    ))

    min_replicas: int = Field(default=1, alias="minReplicas", ge=1)
    max_replicas: int = Field(alias="maxReplicas", ge=1, le=1000)
    target_cpu_utilization: int | None = Field(default=None, alias="targetCPUUtilization", ge=1, le=100,
                                               description="Target average CPU utilization in percent of requests.")
    metric: CustomMetric | None = None

    @model_validator(mode="after")
    def _bounds(self) -> Autoscaling:
        if self.min_replicas > self.max_replicas:
            raise ValueError("autoscaling.minReplicas must be <= autoscaling.maxReplicas")
        if self.target_cpu_utilization is None and self.metric is None:
            raise ValueError("autoscaling needs targetCPUUtilization or metric")
        return self


class ServiceSpec(ContractModel):
    """The Service in front of the pods."""

    port: int = Field(default=80, ge=1, le=65535, description="The port of REST (named http).")
    grpc_port: int = Field(default=9000, alias="grpcPort", ge=1, le=65535,
                           description="The port of gRPC (named grpc), when spec.protocols includes grpc.")
    type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = "ClusterIP"


Protocol = Literal["rest", "grpc"]
REST_ALWAYS = "protocols must include rest (probes and metrics use it)"
GRPC_READINESS_NEEDS_GRPC = "probes.grpcReadiness needs grpc in protocols"
GRPC_PORT_OF_ITS_OWN = "service.port and service.grpcPort must differ when protocols include grpc"


class Resources(ContractModel):
    """Compute requests and limits of the server (and fetch) container."""

    requests: dict[str, Quantity] | None = None
    limits: dict[str, Quantity] | None = None


class EnvVar(ContractModel):
    """An environment variable of the server container (core/v1 EnvVar)."""

    name: str = Field(min_length=1)
    value: str | None = None
    value_from: OpaqueObject | None = Field(default=None, alias="valueFrom")


class Toleration(ContractModel):
    """A taint the pods tolerate (core/v1 Toleration)."""

    key: str | None = None
    operator: Literal["Exists", "Equal"] | None = None
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = Field(default=None, alias="tolerationSeconds")


class ModelDeploymentSpec(ContractModel):
    """The desired state of the model service."""

    model_config = ConfigDict(json_schema_extra=rules(
        ("!has(self.protocols) || 'rest' in self.protocols",
         REST_ALWAYS),
        ("!has(self.probes) || !has(self.probes.grpcReadiness) || !self.probes.grpcReadiness"
         " || (has(self.protocols) && 'grpc' in self.protocols)", GRPC_READINESS_NEEDS_GRPC),
        ("!has(self.protocols) || !('grpc' in self.protocols) || !has(self.service)"
         " || (has(self.service.port) ? self.service.port : 80)"
         " != (has(self.service.grpcPort) ? self.service.grpcPort : 9000)",
         GRPC_PORT_OF_ITS_OWN),
    ))

    model: ModelRef
    image: str | None = Field(
        default=None, min_length=1,
        description="The model server image. Default: the operator's --server-image (MODELDEPLOY_SERVER_IMAGE).",
    )
    parameters: Parameters
    replicas: int = Field(default=1, ge=0, le=1000, description="Number of serving pods when autoscaling is not set.")
    resources: Resources = Field(default_factory=Resources)
    policies: tuple[Policy, ...] = Field(
        default=(), max_length=64,
        description="CEL rules the server applies to every prediction, in order.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    max_request_bytes: int | None = Field(default=None, alias="maxRequestBytes", ge=1,
                                          description="Largest prediction request body the server accepts.")
    probes: Probes = Probes()
    verification: VerificationSpec = VerificationSpec()
    autoscaling: Autoscaling | None = None
    service: ServiceSpec = ServiceSpec()
    protocols: tuple[Protocol, ...] = Field(
        default=("rest",), min_length=1, max_length=2, json_schema_extra={"x-kubernetes-list-type": "set"},
        description="What the pods serve: rest (always: the /api paths and the Open Inference Protocol v2 over "
        "HTTP, with its binary data extension) and grpc (the Open Inference Protocol v2 over gRPC, with the "
        "grpc.health.v1 service and reflection, on container and Service port grpc).")
    env: tuple[EnvVar, ...] = Field(default=(), description="Extra environment variables of the server container.")
    node_selector: dict[str, str] = Field(default_factory=dict, alias="nodeSelector",
                                          description="Node labels the pods must match.")
    tolerations: tuple[Toleration, ...] = Field(default=(), description="Taints the pods tolerate.")
    rollout: RolloutSpec = Field(default_factory=RolloutSpec,
                                 description="How a new revision replaces the stable one: RollingUpdate or Canary.")
    load_test: Analysis | None = Field(
        default=None, alias="loadTest",
        description="Measure every revision once its rollout completes (a load test Job against the stable "
        "pods); the summaries are kept per revision in status.loadTest.")

    @model_validator(mode="after")
    def _unique_policy_names(self) -> ModelDeploymentSpec:
        names = [policy.name for policy in self.policies]
        if len(names) != len(set(names)):
            raise ValueError("policy names must be unique")
        return self

    @model_validator(mode="after")
    def _rest_and_grpc(self) -> ModelDeploymentSpec:
        if "rest" not in self.protocols:
            raise ValueError(REST_ALWAYS)
        if len(set(self.protocols)) != len(self.protocols):
            raise ValueError("protocols: list each protocol once")
        if self.probes.grpc_readiness and not self.grpc:
            raise ValueError(GRPC_READINESS_NEEDS_GRPC)
        if self.grpc and self.service.port == self.service.grpc_port:
            raise ValueError(GRPC_PORT_OF_ITS_OWN)
        return self

    @property
    def grpc(self) -> bool:
        """Whether the pods serve gRPC."""
        return "grpc" in self.protocols


# What the pods run with: a change to any of these is a new revision (rolled out, or canaried).
# The rest (replicas, autoscaling, service, rollout, loadTest) applies to the running revision.
REVISION_FIELDS: tuple[str, ...] = (
    "model", "image", "parameters", "resources", "policies", "max_request_bytes", "probes", "verification",
    "env", "node_selector", "tolerations", "protocols",
)


def with_revision_of(spec: ModelDeploymentSpec, revision: ModelDeploymentSpec) -> ModelDeploymentSpec:
    """`spec` running what `revision` runs: its revision fields, `spec`'s scaling, service and rollout.

    Built from what each side set (not copied field by field), so it records no more than they wrote.
    """
    fields = {name: value for name, value in spec.model_dump(exclude_unset=True).items() if name not in REVISION_FIELDS}
    fields.update(revision.model_dump(exclude_unset=True, include=set(REVISION_FIELDS)))
    return ModelDeploymentSpec.model_validate(fields)


def parse_spec(spec: dict[str, Any]) -> ModelDeploymentSpec:
    """Parse a ModelDeployment's `.spec`.

    Raises:
        SpecError: the spec is invalid; the message names every offending field.
    """
    try:
        return ModelDeploymentSpec.model_validate(dict(spec))
    except ValidationError as err:
        raise SpecError("; ".join(error_lines(err, "spec"))) from None
