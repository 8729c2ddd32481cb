"""The served model's lifecycle: load in the background, then ready; draining on shutdown.

Owns the state the probes report (`started`, `healthy`, `ready`, `draining`) and the
load sequence: compile the spec's policies, verify `model.sig` with the trust (the whole
tree, as fetch did), check that the verified model.yaml is the card the server started
with, compile the signed guardrails (`policies.yaml`, if the tree has one) and put them
before the spec's, and load the flavor from verified bytes only (`VerifiedTree.read`).
No HTTP here.
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
from model_server.modelcard import MODEL_CARD, ModelCard, parse_model_card
from modeldeploy.contract.pod import SIGNED_POLICIES, SignedPolicies
from modeldeploy.contract.reasons import (
    FILES_DIFFER,
    LOAD_FAILED,
    POLICY_CONFLICT,
    PUBLIC_KEY_INVALID,
    SIGNED_POLICIES_INVALID,
    SPEC_INVALID,
)
from modeldeploy.contract.spec import Policy
from modeldeploy.guardrails import SIGNED, Guardrails, PolicyConflict, PolicyError, PolicySet, compile_policies
from modeldeploy.params import signing
from modeldeploy.params.errors import ParametersError, VerificationError

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
        self, card: ModelCard, model_dir: Path, policies: Sequence[Policy], public_key: Path | None = None
    ) -> None:
        self.card = card
        self.model_dir = model_dir
        self.public_key = public_key
        self.raw_policies = policies
        self.state = State.LOADING
        self.error: str | None = None
        self.reason: str | None = None
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
    def ready(self) -> bool:
        """Readiness: loaded and not draining."""
        return self.loaded and not self.draining

    def load(self) -> None:
        """Compile policies, verify the signature and files, load the flavor; record the outcome.

        Never raises: a failure leaves the model FAILED with `error` and `reason` saying why.
        """
        began = time.perf_counter()
        try:
            spec = compile_policies(self.raw_policies).bind(self.card)
            if self.public_key is None:
                raise VerificationError(
                    PUBLIC_KEY_INVALID, "no public key configured (--public-key): nothing unverified is loaded"
                )
            tree = signing.verify_tree(self.model_dir, self.public_key)
            logger.info(
                "signature verified",
                extra={
                    "model": self.name,
                    "manifestDigest": tree.verified.manifest_digest,
                    "keyFingerprint": tree.verified.key_fingerprint,
                },
            )
            if parse_model_card(tree.read(MODEL_CARD), self.model_dir / MODEL_CARD) != self.card:
                raise VerificationError(
                    FILES_DIFFER, f"{MODEL_CARD} changed after the server read it", [MODEL_CARD]
                )
            self.policies = Guardrails(self._signed_policies(tree), spec)
            logger.info("policies compiled", extra={"model": self.name, "policies": self.policies.describe()})
            self.predictor = load_flavor(self.card, tree)
        except Exception as err:  # any failure of user code or files must leave us FAILED, not dead
            self.error = f"{type(err).__name__}: {err}"
            self.reason = failure_reason(err)
            self.state = State.FAILED
            logger.error("model load failed", extra={"model": self.name, "reason": self.reason, "error": self.error})
        else:
            self.state = State.READY
            logger.info("model loaded", extra={"model": self.name, "flavor": self.card.flavor})
        self.load_seconds = time.perf_counter() - began

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
