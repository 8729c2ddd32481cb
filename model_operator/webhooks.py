"""kopf admission handlers and the ModelTrustPolicy status: gather the facts, let `admission.review` decide.

Every replica serves the webhooks (kopf's admission server does not pause with peering), on
TLS with the certificate of `webhook_tls` (or files cert-manager mounts). The mutating
webhook verifies the signature and pins the digest; the validating webhook refuses what only
the server would catch later (a CEL expression its compiler rejects, a policy that would
replace a signed guardrail is the server's to refuse) and a trust that cannot be decided.
"""

from __future__ import annotations

import asyncio
import datetime
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kopf

from model_operator import admission, metrics, webhook_tls
from model_operator.handlers import _state, reconcile_selected, resolve_policies, trust_decision
from modeldeploy.contract import reasons
from modeldeploy.contract.api import GROUP, PLURAL, VERSION
from modeldeploy.contract.spec import ModelDeploymentSpec, SpecError, parse_spec
from modeldeploy.contract.trust import TRUST_PLURAL
from modeldeploy.guardrails import PolicyError, compile_policies

PIN_WEBHOOK = "pin-modeldeployment"
VALIDATE_WEBHOOK = "validate-modeldeployment"


@dataclass(frozen=True)
class WebhookSettings:
    """How this operator serves its admission webhooks (`modeldeploy operator --webhook-*`)."""

    port: int = 9443
    namespace: str = "modeldeploy-system"  # the operator's, holding the TLS Secret and the trust material
    service: str = "modeldeploy-webhook"
    configuration: str = "modeldeploy"  # the Mutating- and ValidatingWebhookConfiguration's name
    secret: str = "modeldeploy-webhook-tls"
    url: str | None = None  # out of cluster: the API server calls this URL instead of the Service
    cert_dir: str | None = None  # tls.crt/tls.key provided (cert-manager): nothing is issued or patched

    def hosts(self) -> list[str]:
        names = webhook_tls.service_names(self.service, self.namespace)
        if self.url:
            names.append(str(urlsplit(self.url).hostname))
        return names


@kopf.on.startup()
async def serve_webhooks(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """Configure kopf's admission server with our certificate; point the configurations at it."""
    web: WebhookSettings = memo.webhook
    if web.cert_dir:
        certfile, keyfile = Path(web.cert_dir, webhook_tls.CERT_KEY), Path(web.cert_dir, webhook_tls.PRIVATE_KEY)
    else:
        kube = _state(memo).kube
        data = await kube.ensure_webhook_secret(web.namespace, web.secret, web.hosts())
        directory = Path(tempfile.mkdtemp(prefix="modeldeploy-webhook-"))
        certfile, keyfile = directory / webhook_tls.CERT_KEY, directory / webhook_tls.PRIVATE_KEY
        certfile.write_bytes(data[webhook_tls.CERT_KEY])
        keyfile.write_bytes(data[webhook_tls.PRIVATE_KEY])
        keyfile.chmod(0o600)
        memo.webhook_ca = data[webhook_tls.CA_KEY]
        await kube.point_webhooks(web.configuration, memo.webhook_ca, web.url, (web.service, web.namespace))
    address = "127.0.0.1" if web.url and "127.0.0.1" in web.url else "0.0.0.0"
    settings.admission.server = kopf.WebhookServer(addr=address, port=web.port, certfile=str(certfile),
                                                   pkeyfile=str(keyfile))
    settings.admission.managed = None


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parsed(spec: Any) -> ModelDeploymentSpec | None:
    try:
        return parse_spec(dict(spec or {}))
    except SpecError:
        return None  # the schema (after mutation) or the validating webhook refuses it with field paths


@kopf.on.mutate(GROUP, VERSION, PLURAL, id=PIN_WEBHOOK, operations=["CREATE", "UPDATE"], side_effects=False)
@metrics.admission_observed(PIN_WEBHOOK)
async def pin(body: kopf.Body, warnings: list[str], patch: kopf.Patch, memo: kopf.Memo, old: Any = None,
              **_: Any) -> None:
    """Verify the signature against the namespace's trust and pin its digest (refuse with the reason)."""
    spec = _parsed(body.get("spec"))
    if spec is None:
        return
    previous = _parsed((old or {}).get("spec")) if old else None
    evidence = admission.Evidence.parse(dict((old or {}).get("metadata", {}).get("annotations") or {})) if old else None
    if not admission.parameters_changed(spec, previous, evidence):
        return  # scaling, policy edits, kopf's own annotations: nothing to fetch or read
    namespace = body.metadata.namespace or ""
    state = _state(memo)
    decision = await trust_decision(state, spec, namespace)
    key, credentials = spec.parameters.public_key, spec.parameters.credentials
    key_data = await state.kube.read_data("Secret", namespace, key.secret_name) if key and not decision.bundle else None
    key_pem = (key_data or {}).get(key.key) if key else None
    environ = (await state.kube.read_data("Secret", namespace, credentials.secret_name) if credentials else {}) or {}
    result = await asyncio.to_thread(
        admission.review, spec, previous, evidence, decision, lambda: key_pem,
        lambda parameters: admission.fetch_signature(parameters, environ), _now(),
    )
    warnings.extend(result.warnings)
    state.metrics.verification(result.reason, refused=result.refusal is not None,
                               warned=result.reason != reasons.SIGNATURE_VALID)
    if result.refusal:
        raise kopf.AdmissionError(result.refusal, code=403)
    for field, value in admission.patch_of(result).items():
        patch[field] = value


@kopf.on.validate(GROUP, VERSION, PLURAL, id=VALIDATE_WEBHOOK, operations=["CREATE", "UPDATE"], side_effects=False)
@metrics.admission_observed(VALIDATE_WEBHOOK)
async def validate(body: kopf.Body, memo: kopf.Memo, old: Any = None, **_: Any) -> None:
    """Refuse a spec the operator cannot render or whose policies the server's CEL compiler rejects."""
    try:
        spec = parse_spec(dict(body.get("spec") or {}))
    except SpecError as err:
        raise kopf.AdmissionError(str(err), code=422) from None
    previous = _parsed((old or {}).get("spec")) if old else None
    if previous is None or previous.policies != spec.policies:
        try:
            await asyncio.to_thread(compile_policies, spec.policies)
        except PolicyError as err:
            raise kopf.AdmissionError(f"spec.policies: {err}", code=422) from None
    evidence = admission.Evidence.parse(dict((old or {}).get("metadata", {}).get("annotations") or {})) if old else None
    if not admission.parameters_changed(spec, previous, evidence):
        return
    decision = await trust_decision(_state(memo), spec, body.metadata.namespace or "")
    if decision.problem:
        raise kopf.AdmissionError(decision.problem, code=403)


@kopf.on.event(GROUP, VERSION, TRUST_PLURAL)
async def trust_policy_changed(body: kopf.Body, type: str | None, memo: kopf.Memo, logger: kopf.Logger,
                               **kwargs: Any) -> None:
    """Keep the policy's status counts, and re-render the ModelDeployments it selects."""
    state = _state(memo)
    name = body.metadata.name or ""
    if type != "DELETED":
        resolved = next((p for p in await resolve_policies(state) if p.name == name), None)
        if resolved is not None:
            status = resolved.status(body.metadata.get("generation")).model_dump(by_alias=True, mode="json")
            if status != {k: v for k, v in (body.get("status") or {}).items() if k in status}:
                await state.kube.patch_trust_status(name, status)
    if type is not None:  # not the listing at start: every ModelDeployment resumes then anyway
        await reconcile_selected(memo, logger, kwargs["model_deployments"])


def _ours(name: str | None, memo: kopf.Memo, **_: Any) -> bool:
    web: WebhookSettings = memo.webhook
    return name == web.configuration and not web.cert_dir


@kopf.on.event("admissionregistration.k8s.io", "v1", "mutatingwebhookconfigurations", when=_ours)
@kopf.on.event("admissionregistration.k8s.io", "v1", "validatingwebhookconfigurations", when=_ours)
async def webhook_configuration_changed(memo: kopf.Memo, type: str | None, **_: Any) -> None:
    """Put the CA (and URL or Service) back when the configurations are re-created or edited."""
    web: WebhookSettings = memo.webhook
    if type != "DELETED":
        kube = _state(memo).kube
        await kube.point_webhooks(web.configuration, memo.webhook_ca, web.url, (web.service, web.namespace))
