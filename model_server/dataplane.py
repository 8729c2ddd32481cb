"""The protocol-neutral operations both REST APIs share: readiness, decode, predict, policies.

Owns input validation against the model card, batching predictions through a worker
thread, applying policies within a per-request time budget (a batch's in a thread of their own, so
an expensive policy never stalls the event loop and the probes), counting policy hits,
and the integrity timer: every `recheck_seconds` the served files are hashed again in a
worker thread, until a recheck fails. No HTTP: routes adapt requests to these calls and
errors surface as `model_server.errors` exceptions.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from typing import Any

from pydantic import TypeAdapter, ValidationError

from model_server.batching import MicroBatcher
from model_server.errors import (
    InvalidInput,
    ModelNotFound,
    ModelNotReady,
    PolicyFailed,
    PolicyRejected,
    PredictionFailed,
)
from model_server.metrics import Metrics
from model_server.model import ServedModel
from model_server.modelcard import input_model, output_model, request_adapter, request_schema
from modeldeploy.contract.pod import ReadinessReport
from modeldeploy.contract.validation import error_lines
from modeldeploy.guardrails import EvaluationFailed, Rejected

logger = logging.getLogger(__name__)

Row = dict[str, Any]


class Prediction:
    """One output row and the policies that changed it."""

    __slots__ = ("applied", "output")

    def __init__(self, output: Row, applied: list[dict[str, Any]]) -> None:
        self.output = output
        self.applied = applied


def policy_hits(results: list[Prediction]) -> list[dict[str, Any]]:
    """Every policy that changed a prediction, with the index of its row (what both v2 protocols report)."""
    return [{**hit, "index": index} for index, result in enumerate(results) for hit in result.applied]


class DataPlane:
    """Serves one model: the only model in this server's directory."""

    def __init__(
        self,
        model: ServedModel,
        metrics: Metrics,
        max_batch_size: int,
        policy_timeout: float = 1.0,
        recheck_seconds: float = 0.0,
        batch_budget_seconds: float = 0.0,
    ) -> None:
        self.model = model
        self.metrics = metrics
        self.max_batch_size = max_batch_size
        self.policy_timeout = policy_timeout
        self.recheck_seconds = recheck_seconds  # 0: never
        # a batch's policies run here, so a costly policy never stalls the event loop (the probes)
        self.policy_executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="policies")
        self.input_row = input_model(model.card)
        self.output_row = output_model(model.card)
        self.body_adapter = request_adapter(self.input_row, max_batch_size)
        self.rows_adapter: TypeAdapter[list[Any]] = TypeAdapter(list[self.input_row])  # type: ignore[name-defined]
        self.batcher = MicroBatcher(
            self._predict_loaded, max_batch_size, batch_budget_seconds, metrics.batch_rows.labels(model.name).observe
        )
        self.load_task: asyncio.Task[None] | None = None
        self.recheck_task: asyncio.Task[None] | None = None

    # lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        """Start the batcher and load the model in the background (probes answer meanwhile).

        A model that has loaded already (before the workers forked) is only reported.
        """
        self.metrics.model_ready.labels(self.model.name).set(0)
        self.batcher.start()  # before loading: a model that is loaded can predict at once
        self.load_task = asyncio.get_running_loop().create_task(self._load())

    async def _load(self) -> None:
        if not self.model.started:
            await asyncio.to_thread(self.model.load)
        name = self.model.name
        if self.model.load_seconds is not None:
            self.metrics.load_seconds.labels(name).set(self.model.load_seconds)
        self.metrics.model_ready.labels(name).set(1 if self.model.ready else 0)
        verified = self.model.loaded and self.model.integrity_failure is None
        self.metrics.parameters_verified.labels(name).set(1 if verified else 0)
        if verified and self.recheck_seconds > 0:
            self.recheck_task = asyncio.get_running_loop().create_task(self._recheck_until_it_fails())

    async def _recheck_until_it_fails(self) -> None:
        """Every `recheck_seconds`, hash the served files in a worker thread; stop at the first mismatch."""
        name = self.model.name
        while True:
            await asyncio.sleep(self.recheck_seconds)
            if not await asyncio.to_thread(self.model.recheck):
                self.metrics.integrity_checks.labels(name, "failed").inc()
                self.metrics.parameters_verified.labels(name).set(0)
                self.metrics.model_ready.labels(name).set(0)
                return
            self.metrics.integrity_checks.labels(name, "ok").inc()

    def _predict_loaded(self, rows: list[Row]) -> list[Row]:
        """In the batcher's thread: the loaded model's predictions (`predict` checks it is loaded)."""
        assert self.model.predictor is not None
        return self.model.predictor.predict(rows)

    async def stop(self) -> None:
        if self.load_task is not None:
            await asyncio.gather(self.load_task, return_exceptions=True)
        if self.recheck_task is not None:
            self.recheck_task.cancel()
            await asyncio.gather(self.recheck_task, return_exceptions=True)
        await self.batcher.stop()
        self.policy_executor.shutdown(wait=False, cancel_futures=True)

    def drain(self) -> None:
        """Fail readiness from now on; requests already accepted still complete."""
        self.model.draining = True
        self.metrics.model_ready.labels(self.model.name).set(0)

    # probes --------------------------------------------------------------------------------
    def live(self) -> bool:
        return self.model.healthy

    def started(self) -> bool:
        return self.model.started

    def ready(self) -> bool:
        return self.model.ready

    def readiness(self) -> ReadinessReport:
        return self.model.readiness()

    def get_model(self, name: str) -> ServedModel:
        """The served model called `name`.

        Raises:
            ModelNotFound: no model of that name is served here.
        """
        if name != self.model.name:
            raise ModelNotFound(f"model {name!r} is not served here; this server serves {self.model.name!r}")
        return self.model

    def metadata(self, name: str) -> dict[str, Any]:
        """Card, input/output JSON Schema, an example input and the policies (name, source, action)."""
        model = self.get_model(name)
        card = model.card
        return {
            "name": card.name,
            "version": card.version,
            "flavor": card.flavor,
            "description": card.description,
            "inputSchema": request_schema(self.input_row, self.max_batch_size),
            "outputSchema": self.output_row.model_json_schema(),
            "example": card.example_input(),
            "policies": model.policies.describe(),
            "status": model.status(),
        }

    # decode --------------------------------------------------------------------------------
    def decode_body(self, body: bytes) -> tuple[list[Row], bool]:
        """Validate a JSON body (one row or a list of rows); returns the rows and whether it was one.

        Raises:
            InvalidInput: the body is not JSON or does not match the input schema.
        """
        try:
            parsed = self.body_adapter.validate_json(body)
        except ValidationError as err:
            raise InvalidInput(*_union_messages(err)) from err
        if isinstance(parsed, list):
            return [item.__dict__ for item in parsed], False
        return [parsed.__dict__], True

    def decode_rows(self, rows: list[Row]) -> list[Row]:
        """Validate rows assembled by a protocol adapter (e.g. v2 tensors)."""
        if not rows:
            raise InvalidInput("no input rows")
        if len(rows) > self.max_batch_size:
            raise InvalidInput(f"{len(rows)} rows exceed the batch limit of {self.max_batch_size}")
        try:
            return [item.__dict__ for item in self.rows_adapter.validate_python(rows)]
        except ValidationError as err:
            raise InvalidInput(*error_lines(err)) from err

    # predict -------------------------------------------------------------------------------
    async def predict(self, model: ServedModel, rows: list[Row]) -> list[Prediction]:
        """Predict validated rows with `model` (from `get_model`), then apply the policies to each prediction.

        Raises:
            ModelNotReady, PolicyRejected, PredictionFailed.
        """
        name = model.name
        if not model.loaded:
            raise ModelNotReady(f"model {name!r} is not ready ({model.state.value.lower()})")
        try:
            outputs = await self.batcher.submit(rows)
        except Exception as err:
            logger.exception("prediction failed", extra={"model": name})
            raise PredictionFailed(f"model {name!r} failed to predict: {type(err).__name__}: {err}") from err
        if not len(model.policies):
            return [Prediction(output, []) for output in outputs]
        deadline = time.monotonic() + self.policy_timeout
        if len(rows) == 1:  # one row's evaluations take microseconds: less than a thread hop
            return self._apply_policies(model, rows, outputs, deadline)
        work = asyncio.get_running_loop().run_in_executor(
            self.policy_executor, self._apply_policies, model, rows, outputs, deadline
        )
        try:
            return await asyncio.wait_for(work, self.policy_timeout + 0.05)
        except TimeoutError as err:  # one evaluation outlived the budget (the thread finishes it)
            raise PolicyFailed(
                f"policies of {name!r} did not finish within policyTimeoutSeconds ({self.policy_timeout:g} s)",
                policy=None,
            ) from err

    def _apply_policies(
        self, model: ServedModel, rows: list[Row], outputs: list[Row], deadline: float
    ) -> list[Prediction]:
        """Every policy over every prediction, before `deadline`."""
        name = model.name
        results = []
        for index, (row, output) in enumerate(zip(rows, outputs, strict=True)):
            try:
                applied = model.policies.apply(row, output, deadline)
            except Rejected as rejection:
                self.metrics.policy_hits.labels(name, rejection.policy, rejection.source, "reject").inc()
                at = {"index": index} if len(rows) > 1 else {}
                raise PolicyRejected(str(rejection), policy=rejection.policy, source=rejection.source,
                                     **at) from rejection
            except EvaluationFailed as failure:
                raise PolicyFailed(str(failure), policy=failure.policy, source=failure.source,
                                   index=index) from failure
            for hit in applied:
                self.metrics.policy_hits.labels(name, hit.policy, hit.source, hit.action).inc()
            results.append(Prediction(output, [hit.as_dict() for hit in applied]))
        return results


def _union_messages(err: ValidationError) -> list[str]:
    """Errors of `row | list[row]`, reported against the branch the body was meant for."""
    errors = err.errors(include_url=False)
    if len(errors) == 1 and not errors[0]["loc"]:  # not JSON at all
        return [errors[0]["msg"]]
    single_tag = errors[0]["loc"][0]
    single = [e for e in errors if e["loc"][0] == single_tag]
    batch = [e for e in errors if e["loc"][0] != single_tag]
    if all(e["type"] == "model_type" and len(e["loc"]) == 1 for e in single):
        if all(e["type"] == "list_type" and len(e["loc"]) == 1 for e in batch):
            return ["body: expected a JSON object (one input) or an array of objects (a batch)"]
        single = batch
    return [f"{'.'.join(str(p) for p in e['loc'][1:]) or 'body'}: {e['msg']}" for e in single]
