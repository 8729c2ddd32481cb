"""The pod contract: what the operator renders into a pod and what its containers run and report.

```
init container `fetch`   modeldeploy fetch SOURCE --dest MODEL_DIR (--trust TRUST_PATH | --public-key KEYS_DIR/KEY) ...
                         (FetchArgs.argv) -> writes a TerminationRecord to TERMINATION_LOG
container `server`       modeldeploy serve MODEL_DIR --config CONFIG_PATH ... (ServeArgs.argv)
                         reads ServerConfig from CONFIG_PATH; probes on the HEALTH_* paths
```
The operator reads the record back from the init container's termination message
(`TerminationRecord.parse`) to set `ParametersVerified`. Both sides import this module, so
neither can change a name, a flag or a record field without the other's tests noticing.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Final

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from modeldeploy.contract.spec import Policy
from modeldeploy.contract.validation import error_lines

INIT_CONTAINER: Final = "fetch"
SERVER_CONTAINER: Final = "server"
COMMAND: Final = "modeldeploy"

MODEL_ROOT: Final = "/var/lib/modeldeploy"  # the parameters volume
MODEL_DIR: Final = f"{MODEL_ROOT}/model"  # where fetch installs the verified tree
KEYS_DIR: Final = "/etc/modeldeploy/keys"  # the public key Secret
CONFIG_DIR: Final = "/etc/modeldeploy"
CONFIG_KEY: Final = "server.yaml"  # the ConfigMap key holding ServerConfig
CONFIG_PATH: Final = f"{CONFIG_DIR}/{CONFIG_KEY}"
TRUST_KEY: Final = "trust.json"  # the ConfigMap key holding the TrustBundle (modeldeploy.contract.trust)
TRUST_PATH: Final = f"{CONFIG_DIR}/{TRUST_KEY}"
SIGNED_POLICIES: Final = "policies.yaml"  # signed guardrails at the top of the parameters tree
TERMINATION_LOG: Final = "/dev/termination-log"
METRICS_DIR: Final = "/tmp/modeldeploy-metrics"  # the server's PROMETHEUS_MULTIPROC_DIR (an emptyDir)
SERVER_PORT: Final = 8000
PORT_NAME: Final = "http"
GRPC_PORT: Final = 9000
GRPC_PORT_NAME: Final = "grpc"
RUN_AS: Final = 65532  # the images' user and group

HEALTH_STARTUP: Final = "/api/health/startup"
HEALTH_READY: Final = "/api/health/ready"
HEALTH_LIVE: Final = "/api/health"

MAX_RECORD_BYTES: Final = 4000  # Kubernetes keeps 4096 bytes of a termination message


@dataclass(frozen=True)
class FetchArgs:
    """The init container's command line (`modeldeploy fetch`)."""

    source: str
    dest: str
    public_key: str | None = None
    trust: str | None = None  # a TrustBundle file; exactly one of public_key or trust
    termination_log: str | None = None
    max_bytes: int | None = None
    deadline: float | None = None
    signature_uri: str | None = None
    sha256: str | None = None

    def argv(self) -> list[str]:
        """The command, as the container runs it."""
        command = [COMMAND, "fetch", self.source, "--dest", self.dest]
        for flag, value in (
            ("--public-key", self.public_key),
            ("--trust", self.trust),
            ("--termination-log", self.termination_log),
            ("--max-bytes", self.max_bytes),
            ("--deadline", self.deadline),
            ("--signature-uri", self.signature_uri),
            ("--sha256", self.sha256),
        ):
            if value is not None:
                command += [flag, f"{value:g}" if isinstance(value, float) else str(value)]
        return command


@dataclass(frozen=True)
class ServeArgs:
    """The server container's command line (`modeldeploy serve`)."""

    model_dir: str
    config: str
    public_key: str | None = None
    trust: str | None = None  # a TrustBundle file; exactly one of public_key or trust
    host: str = "0.0.0.0"
    port: int = SERVER_PORT
    grpc_port: int = 0  # 0: no gRPC (given always: the image's default is GRPC_PORT)

    def argv(self) -> list[str]:
        """The command, as the container runs it."""
        trust = ["--trust", self.trust] if self.trust else ["--public-key", str(self.public_key)]
        return [
            COMMAND, "serve", self.model_dir, "--config", self.config, *trust,
            "--host", self.host, "--port", str(self.port), "--grpc-port", str(self.grpc_port),
        ]


@dataclass(frozen=True)
class LoadTestArgs:
    """The analysis Job's command line (`modeldeploy loadtest`): load the targets, and the baseline alike."""

    targets: tuple[str, ...]  # http://POD-IP:PORT of the revision under test
    model: str
    duration_seconds: int
    users: int | None = None  # exactly one of users or rate
    rate: float | None = None
    samples: int = 200
    inputs: str | None = None  # a JSONL file of request bodies
    baseline: tuple[str, ...] = ()  # the stable pods, loaded alike and compared with
    tolerance: float = 1e-6
    termination_log: str = TERMINATION_LOG

    def argv(self) -> list[str]:
        """The command, as the container runs it."""
        command = [COMMAND, "loadtest", ",".join(self.targets), "--model", self.model,
                   "--duration", f"{self.duration_seconds}s", "--samples", str(self.samples)]
        command += ["--rate", f"{self.rate:g}"] if self.rate is not None else ["--users", str(self.users or 1)]
        if self.inputs is not None:
            command += ["--input", self.inputs]
        if self.baseline:
            command += ["--baseline", ",".join(self.baseline), "--compare", str(self.samples),
                        "--tolerance", f"{self.tolerance:g}"]
        return [*command, "--termination-log", self.termination_log]


class ServerConfig(BaseModel):
    """`server.yaml`: what the operator tells the server beyond its command line (camelCase keys)."""

    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True,
                              protected_namespaces=())

    max_request_bytes: int = Field(default=1024 * 1024, gt=0)
    max_batch_size: int = Field(default=1024, gt=0)
    # how long requests queued behind a running batch may wait for more to share the next one; 0: never wait
    batch_latency_budget_ms: float = Field(default=2.0, ge=0.0, le=1000.0)
    drain_seconds: float = Field(default=5.0, ge=0.0)
    policies: tuple[Policy, ...] = ()
    policy_timeout_seconds: float = Field(default=1.0, gt=0.0)  # per request, all rows and policies
    recheck_seconds: float = Field(default=0.0, ge=0.0)  # re-verify the served files this often; 0: never

    def document(self) -> dict[str, Any]:
        """The YAML document: only the keys that were set, policies as written."""
        document = self.model_dump(by_alias=True, exclude_unset=True, exclude={"policies"})
        if "policies" in self.model_fields_set:
            document["policies"] = [policy.document() for policy in self.policies]
        return document


# `verified` and `reason` come first in the record, so they survive a message cut at 4 KiB.
_RECORD_HEAD = re.compile(r'^\{\s*"verified"\s*:\s*(true|false)\s*,\s*"reason"\s*:\s*"([A-Za-z]+)"')


class TerminationRecord(BaseModel):
    """The init container's result: one line of JSON in its termination message."""

    model_config = ConfigDict(populate_by_name=True, frozen=True)

    verified: bool
    reason: str
    message: str = ""
    key_fingerprint: str | None = Field(default=None, alias="keyFingerprint")
    manifest_digest: str | None = Field(default=None, alias="manifestDigest")
    signer: str | None = None  # key fingerprint or certificate subject
    issuer: str | None = None  # certificate issuer
    trusted_by: str | None = Field(default=None, alias="trustedBy")
    hash_algorithm: str | None = Field(default=None, alias="hashAlgorithm")
    signed_policies: tuple[str, ...] = Field(default=(), alias="signedPolicies")
    failed_files: tuple[str, ...] = Field(default=(), alias="failedFiles")
    source: str | None = None

    def line(self) -> str:
        """The record as written: ASCII JSON on one line, `verified` and `reason` first."""
        return json.dumps(self.model_dump(by_alias=True), ensure_ascii=True, separators=(",", ":"))

    @classmethod
    def parse(cls, text: str | None) -> TerminationRecord | None:
        """The record in a termination message (its last record line), or None if there is none.

        A record cut short by the kubelet still yields its `verified` and `reason`.
        """
        lines = (text or "").strip().splitlines()
        for line in reversed(lines):
            try:
                return cls.model_validate_json(line)
            except ValidationError:
                continue
        head = _RECORD_HEAD.match(lines[-1].strip()) if lines else None
        if head:
            return cls(verified=head[1] == "true", reason=head[2], message="(the fetch result was truncated)")
        return None


class SignedPolicies(BaseModel):
    """`policies.yaml` at the top of a signed parameters tree: guardrails that travel with the weights."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    policies: tuple[Policy, ...] = Field(min_length=1, max_length=64)

    @classmethod
    def parse(cls, data: bytes) -> tuple[Policy, ...]:
        """The policies of a `policies.yaml` document (YAML or JSON).

        Raises:
            ValueError: not YAML, not a mapping with a `policies` list, or an invalid policy
                (the message names every offending field).
        """
        try:
            document = yaml.safe_load(data.decode("utf-8"))
            policies = cls.model_validate(document).policies
        except (UnicodeDecodeError, yaml.YAMLError) as err:
            raise ValueError(f"{SIGNED_POLICIES} is not UTF-8 YAML: {err}") from None
        except ValidationError as err:
            raise ValueError(f"{SIGNED_POLICIES}: {'; '.join(error_lines(err))}") from None
        names = [policy.name for policy in policies]
        if len(names) != len(set(names)):
            raise ValueError(f"{SIGNED_POLICIES}: policy names must be unique")
        return policies


class ReadinessReport(BaseModel):
    """The body of the server's readiness answer (HEALTH_READY, 200 when `ready`, else 503): why it is (not) ready.

    `reason` is `Serving` when ready, else `Loading`, `Draining`, why the load failed
    (`LoadFailed`, `PolicyConflict`, `SpecInvalid` or a verification reason), or `FilesDiffer`
    once a recheck (`ServerConfig.recheck_seconds`) found the served files changed; that one
    stays until the pod is replaced. The operator reads it from a pod whose server stopped being
    ready, so a failed integrity recheck shows up as `ParametersVerified=False` with the reason.
    """

    model_config = ConfigDict(populate_by_name=True, frozen=True)

    ready: bool
    reason: str = Field(description="A reason code of modeldeploy.contract.reasons, e.g. FilesDiffer.")
    message: str = ""
    failed_files: tuple[str, ...] = Field(default=(), alias="failedFiles")
