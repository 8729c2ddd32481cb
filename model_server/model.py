"""The served model's lifecycle: load in the background, then ready; draining on shutdown.

Owns the state the probes report (`started`, `healthy`, `ready`, `draining`) and the
load sequence: compile the spec's policies, verify `model.sig` with the public key or
the trust file's signers (the whole tree, as fetch did), check that the verified
model.yaml is the card the server started with, compile the signed guardrails
(`policies.yaml`, if the tree has one) and put them before the spec's, and load the
flavor from verified bytes only (`VerifiedTree.read`). After loading, `recheck` hashes
the served files again against the signed manifest; a mismatch takes readiness away for
good (liveness stays: a restarted container would serve the same files), in every worker
process that shares this model (`integrity.FailureBoard`). `readiness()` says why the
model is (not) ready. No HTTP here.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from model_server.flavors import Predictor
from model_server.flavors import load as load_flavor
from model_server.integrity import FailureBoard
from model_server.modelcard import MODEL_CARD, ModelCard, parse_model_card
from modeldeploy.contract.pod import SIGNED_POLICIES, ReadinessReport, SignedPolicies
from modeldeploy.contract.reasons import (
    DRAINING,
    FILES_DIFFER,
    LOAD_FAILED,
    LOADING,
    POLICY_CONFLICT,
    PUBLIC_KEY_INVALID,
    SERVING,
    SIGNED_POLICIES_INVALID,
    SPEC_INVALID,
)
from modeldeploy.contract.spec import Policy
from modeldeploy.guardrails import SIGNED, Guardrails, PolicyConflict, PolicyError, PolicySet, compile_policies
from modeldeploy.params import signing
from modeldeploy.params.errors import ParametersError, VerificationError
from modeldeploy.params.trust import Trust

logger = logging.getLogger(__name__)


class State(enum.Enum):
    LOADING = "Loading"
    READY = "Ready"
    FAILED = "Failed"


def failure_reason(err: Exception) -> str:
    """The contract reason code of a failed load."""
    if isinstance(err, ParametersError):
        return err.reason
    if isinstance(err, PolicyConflict):
        return POLICY_CONFLICT
    if isinstance(err, PolicyError):
        return SPEC_INVALID
    return LOAD_FAILED


class ServedModel:
    """One model directory: its card, policies and, once loaded, its predictor."""

    def __init__(
        self,
        card: ModelCard,
        model_dir: Path,
        policies: Sequence[Policy],
        public_key: Path | None = None,
        trust: Path | None = None,
    ) -> None:
        self.card = card
        self.model_dir = model_dir
        self.public_key = public_key
        self.trust = trust  # a trust.json; exactly one of public_key and trust
        self.raw_policies = policies
        self.state = State.LOADING
        self.error: str | None = None
        self.reason: str | None = None
        self.failed_files: list[str] = []
        self.tree: signing.VerifiedTree | None = None
        self.integrity = FailureBoard()  # what a recheck found, in any worker; never cleared
        self.draining = False
        self.load_seconds: float | None = None
        self.predictor: Predictor | None = None
        self.policies = Guardrails(PolicySet([]), PolicySet([]))

    @property
    def name(self) -> str:
        return self.card.name

    @property
    def started(self) -> bool:
        """Loading has finished, one way or the other."""
        return self.state is not State.LOADING

    @property
    def healthy(self) -> bool:
        return self.state is not State.FAILED

    @property
    def loaded(self) -> bool:
        """The model can predict (still true while draining, so in-flight traffic completes)."""
        return self.state is State.READY

    @property
    def integrity_failure(self) -> VerificationError | None:
        """What a failed recheck found (in this process or another worker), or None."""
        return self.integrity.read()

    @property
    def ready(self) -> bool:
        """Readiness: loaded, its files as signed at the last recheck, and not draining."""
        return self.loaded and self.integrity_failure is None and not self.draining

    def readiness(self) -> ReadinessReport:
        """Whether the model is ready and, if not, why (the readiness probe's body)."""
        if self.state is State.LOADING:
            return ReadinessReport(ready=False, reason=LOADING, message=f"model {self.name!r} is loading")
        if self.state is State.FAILED:
            assert self.reason is not None and self.error is not None
            return ReadinessReport(ready=False, reason=self.reason, message=self.error,
                                   failed_files=tuple(self.failed_files))
        if self.integrity_failure is not None:
            failure = self.integrity_failure
            return ReadinessReport(ready=False, reason=failure.reason, message=failure.args[0],
                                   failed_files=tuple(failure.files))
        if self.draining:
            return ReadinessReport(ready=False, reason=DRAINING, message="the server is shutting down")
        return ReadinessReport(ready=True, reason=SERVING)

    def recheck(self) -> bool:
        """Hash the served files again against the signed manifest; False (and not ready from now on) if they differ.

        Call it only once the model has loaded, from a thread that is not the event loop.
        """
        assert self.tree is not None
        try:
            self.tree.recheck()
        except VerificationError as err:
            self.integrity.post(err)
            logger.error("served files no longer match the signature: not ready from now on",
                         extra={"model": self.name, "reason": err.reason, "error": err.args[0],
                                "failedFiles": err.files})
            return False
        return True

    def load(self) -> None:
        """Compile policies, verify the signature and files, load the flavor; record the outcome.

        Never raises: a failure leaves the model FAILED with `error` and `reason` saying why.
        """
        began = time.perf_counter()
        try:
            spec = compile_policies(self.raw_policies).bind(self.card)
            tree = signing.verify_tree(self.model_dir, self._trusted())
            logger.info(
                "signature verified",
                extra={
                    "model": self.name,
                    "manifestDigest": tree.verified.manifest_digest,
                    "keyFingerprint": tree.verified.key_fingerprint,
                    "signer": tree.verified.signer,
                    "trustedBy": tree.verified.trusted_by,
                },
            )
            if parse_model_card(tree.read(MODEL_CARD), self.model_dir / MODEL_CARD) != self.card:
                raise VerificationError(
                    FILES_DIFFER, f"{MODEL_CARD} changed after the server read it", [MODEL_CARD]
                )
            self.policies = Guardrails(self._signed_policies(tree), spec)
            logger.info("policies compiled", extra={"model": self.name, "policies": self.policies.describe()})
            self.predictor = load_flavor(self.card, tree)
            self.tree = tree
        except Exception as err:  # any failure of user code or files must leave us FAILED, not dead
            self.error = f"{type(err).__name__}: {err}"
            self.reason = failure_reason(err)
            self.failed_files = err.files if isinstance(err, ParametersError) else []
            self.state = State.FAILED
            logger.error("model load failed", extra={"model": self.name, "reason": self.reason, "error": self.error})
        else:
            self.state = State.READY
            logger.info("model loaded", extra={"model": self.name, "flavor": self.card.flavor})
        self.load_seconds = time.perf_counter() - began

    def _trusted(self) -> Trust | Path:
        """Whom the signature must be made by.

        Raises:
            VerificationError: `TrustInvalid` (an unreadable trust file), `PublicKeyInvalid` (no trust at all).
        """
        if self.trust is not None:
            return Trust.load(self.trust)
        if self.public_key is None:
            raise VerificationError(PUBLIC_KEY_INVALID, "no public key or trust file configured (--public-key, "
                                    "--trust): nothing unverified is loaded")
        return self.public_key

    def _signed_policies(self, tree: signing.VerifiedTree) -> PolicySet:
        """The guardrails signed with the parameters (none if the tree has no policies.yaml).

        Raises:
            VerificationError: `SignedPoliciesInvalid`: not a policy list, or a policy this model cannot apply.
        """
        if SIGNED_POLICIES not in tree.names:
            return PolicySet([])
        try:
            return compile_policies(SignedPolicies.parse(tree.read(SIGNED_POLICIES)), SIGNED).bind(self.card)
        except ValueError as err:  # SignedPolicies.parse's and the compiler's (PolicyError)
            raise VerificationError(SIGNED_POLICIES_INVALID, f"the signed {SIGNED_POLICIES}: {err}",
                                    [SIGNED_POLICIES]) from err

    def status(self) -> dict[str, Any]:
        """What the probes and `/api/models` report."""
        return {
            "name": self.name,
            "version": self.card.version,
            "flavor": self.card.flavor,
            "state": self.state.value,
            "ready": self.ready,
            "draining": self.draining,
            "error": self.error,
            "reason": self.reason,
        }
