"""Both sides of the pod contract: what the operator renders, the containers' command lines accept.

The init container's and the server's command lines are parsed by the real click commands, the
ConfigMap's `server.yaml` is read by the real server settings loader, and a termination record
written by fetch is read back by the operator's status code.
"""

from __future__ import annotations

from pathlib import Path

import click

from model_operator.render import ObjectRef, fetch_args, render_config_map, render_deployment
from model_operator.status import fetch_result
from model_server.serve import serve
from model_server.settings import load_settings
from modeldeploy.contract import pod
from modeldeploy.contract.api import SPEC_HASH_ANNOTATION
from modeldeploy.contract.spec import parse_spec
from modeldeploy.contract.trust import PolicyTrust, TrustBundle, TrustedSigner
from modeldeploy.params.errors import VerificationError
from modeldeploy.params.fetch import termination_record
from modeldeploy.params.fetch_cli import fetch

REF = ObjectRef("iris", "ml")
SPEC = parse_spec({
    "model": {"name": "iris", "version": "1.0.0"},
    "parameters": {
        "source": "s3://models/iris/1.0.0.tar.gz", "signature": "s3://models/iris/1.0.0.sig",
        "publicKey": {"secretName": "key", "key": "signer.pem"}, "sha256": "ab" * 32, "maxBytes": 1 << 30,
    },
    "maxRequestBytes": 4096,
    "probes": {"maxLoadSeconds": 300},
    "policies": [
        {"name": "floor", "when": "prediction.price < 0.0", "action": "clamp", "min": 0.0},
        {"name": "to-null", "action": "override", "value": None},
    ],
})


def containers() -> dict[str, dict[str, object]]:
    spec = render_deployment(SPEC, REF, "server:1")["spec"]["template"]["spec"]
    return {c["name"]: c for c in [*spec["initContainers"], *spec["containers"]]}


def test_the_fetch_command_accepts_every_argument_the_operator_renders() -> None:
    command = containers()[pod.INIT_CONTAINER]["command"]
    assert command == fetch_args(SPEC).argv() and command[:2] == [pod.COMMAND, "fetch"]
    params = fetch.make_context("fetch", list(command[2:])).params
    assert params["source"] == SPEC.parameters.source and str(params["dest"]) == pod.MODEL_DIR
    assert str(params["public_key"]) == f"{pod.KEYS_DIR}/signer.pem"
    assert (params["signature_uri"], params["sha256"]) == (SPEC.parameters.signature, SPEC.parameters.sha256)
    assert (params["max_bytes"], params["deadline"]) == (1 << 30, 300)
    assert str(params["termination_log"]) == pod.TERMINATION_LOG


def test_the_serve_command_accepts_every_argument_the_operator_renders() -> None:
    server = containers()[pod.SERVER_CONTAINER]
    command = server["command"]
    assert command[:2] == [pod.COMMAND, "serve"]
    # the paths exist only in the pod: parse the flags (unknown ones fail) without converting values
    params, extra, _ = serve.make_parser(click.Context(serve)).parse_args(list(command[2:]))
    assert extra == [] and params["model_dir"] == pod.MODEL_DIR and params["config_file"] == pod.CONFIG_PATH
    assert params["public_key"] == f"{pod.KEYS_DIR}/signer.pem" and params["port"] == str(pod.SERVER_PORT)


def test_the_serve_command_accepts_the_trust_file_the_operator_renders() -> None:
    bundle = TrustBundle(policies=(PolicyTrust(policy="release", signers=(
        TrustedSigner(name="release", publicKeyPem="-----BEGIN PUBLIC KEY-----"),)),))
    spec = render_deployment(SPEC, REF, "server:1", bundle)["spec"]["template"]["spec"]
    command = next(c for c in spec["containers"] if c["name"] == pod.SERVER_CONTAINER)["command"]
    params, extra, _ = serve.make_parser(click.Context(serve)).parse_args(list(command[2:]))
    assert extra == [] and params["trust"] == pod.TRUST_PATH and "public_key" not in params


def test_the_server_reads_the_config_the_operator_writes(tmp_path: Path) -> None:
    config = tmp_path / pod.CONFIG_KEY
    config.write_text(render_config_map(SPEC, REF)["data"][pod.CONFIG_KEY])
    settings = load_settings(tmp_path, config)
    assert settings.max_request_bytes == 4096
    assert settings.policies == SPEC.policies
    assert "value" in settings.policies[1].model_fields_set  # an override to null stays one


def test_the_operator_reads_the_record_fetch_writes() -> None:
    record = termination_record(SPEC.parameters.source, VerificationError("FilesDiffer", "model.joblib differs",
                                                                          ["model.joblib"]), "sha256:" + "1" * 64)
    spec_hash = render_deployment(SPEC, REF, "server:1")["spec"]["template"]["metadata"]["annotations"][
        SPEC_HASH_ANNOTATION]
    terminated = {"exitCode": 1, "message": record.line(), "finishedAt": "2026-01-01T00:00:00Z"}
    pod_status = {
        "metadata": {"annotations": {SPEC_HASH_ANNOTATION: spec_hash}},
        "status": {"initContainerStatuses": [{"name": pod.INIT_CONTAINER, "state": {"terminated": terminated}}]},
    }
    result = fetch_result([pod_status], spec_hash)
    assert result.record is not None
    assert (result.status, result.reason, result.record.failed_files) == ("False", "FilesDiffer", ("model.joblib",))
