"""The rollout state machine (`model_operator.rollout`), pure: observed objects in, the next move out.

Deployments, pods and Jobs are the rendered manifests with the status fields the controllers
would add; the revisions are the renderer's own (`render.revision`).
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from model_operator import rollout
from model_operator.render import ObjectRef, render_analysis_job, render_canary, render_deployment, revision
from model_operator.status import FetchResult
from modeldeploy.contract import reasons
from modeldeploy.contract.api import SPEC_HASH_ANNOTATION
from modeldeploy.contract.pod import LoadTestArgs
from modeldeploy.contract.rollout import (
    Analysis,
    AnalysisReport,
    AnalysisResult,
    Comparison,
    Gates,
    InputsRef,
    LoadFigures,
    RolloutStatus,
    evaluate_gates,
    judge,
)
from modeldeploy.contract.spec import ModelDeploymentSpec, parse_spec

REF = ObjectRef("iris", "ml")
IMAGE = "registry.local/server:1"
NOW = "2026-12-02T12:00:00Z"
LATER = "2026-12-02T12:30:00Z"


def spec_of(version: str = "1.0.0", strategy: str = "Canary", **extra: Any) -> ModelDeploymentSpec:
    return parse_spec({
        "model": {"name": "iris", "version": version},
        "parameters": {"source": f"s3://models/iris-{version}.tar.gz", "publicKey": {"secretName": "key"}},
        "replicas": 2,
        "rollout": {"strategy": strategy, **extra.pop("rollout", {})},
        **extra,
    })


def rolled(manifest: dict[str, Any], ready: int | None = None) -> dict[str, Any]:
    """The Deployment as its controller reports it once every replica runs its template."""
    done = copy.deepcopy(manifest)
    replicas = done["spec"].get("replicas", 1) if ready is None else ready
    done["metadata"]["generation"] = 1
    done["status"] = {"observedGeneration": 1, "replicas": replicas, "updatedReplicas": replicas,
                      "availableReplicas": replicas, "readyReplicas": replicas}
    return done


def pods_of(deployment: dict[str, Any], count: int, first_ip: int = 10) -> list[dict[str, Any]]:
    template = deployment["spec"]["template"]["metadata"]
    return [{"metadata": {"name": f"{deployment['metadata']['name']}-{i}", "labels": template["labels"],
                          "annotations": {SPEC_HASH_ANNOTATION: template["annotations"][SPEC_HASH_ANNOTATION]}},
             "status": {"podIP": f"10.1.0.{first_ip + i}", "conditions": [{"type": "Ready", "status": "True"}]}}
            for i in range(count)]


def report(error_rate: float = 0.0, p99: float = 5.0, changed: int = 0, rejected: int = 0) -> AnalysisReport:
    figures = LoadFigures(requests=1000, failures=int(1000 * error_rate), rps=33.3, p50_ms=2.0, p99_ms=p99,
                          error_rate=error_rate)
    return AnalysisReport(canary=figures, baseline=figures,
                          comparison=Comparison(compared=200, changed=changed, rejected=rejected, overridden=0))


class World:
    """A stable Deployment of 1.0.0 rolled out, and the spec moved on to `spec`."""

    def __init__(self, spec: ModelDeploymentSpec, stable_version: str = "1.0.0") -> None:
        self.spec = spec
        self.stored = spec_of(stable_version, **{"rollout": spec.rollout.model_dump(by_alias=True)})
        self.stable = rolled(render_deployment(self.stored, REF, IMAGE))
        self.desired = revision(spec, REF, IMAGE)
        self.stable_revision = revision(self.stored, REF, IMAGE)
        self.canary: dict[str, Any] | None = None
        self.jobs: dict[str, rollout.JobState] = {}
        self.fetch: FetchResult | None = None
        self.old: RolloutStatus | None = None
        self.tests: list[AnalysisResult] = []

    def plan(self, now: str = NOW) -> rollout.Plan:
        pods = pods_of(self.stable, 2) + (pods_of(self.canary, self.canary["spec"]["replicas"], 50)
                                          if self.canary else [])
        observed = rollout.Observed(self.stable, self.canary, pods, self.jobs, self.fetch)
        plan = rollout.plan_rollout(self.spec, REF, self.stored, self.desired, self.stable_revision, observed,
                                    self.old, self.tests, now)
        self.old = plan.rollout
        if plan.load_tests is not None:
            self.tests = plan.load_tests
        return plan

    def canary_ready(self, replicas: int) -> None:
        self.canary = rolled(render_canary(self.spec, REF, IMAGE, None, replicas)[1])

    def finish(self, name: str, result: AnalysisReport | None, failure: str | None = None) -> None:
        self.jobs[name] = rollout.JobState(name, True, result, failure)


def test_a_new_revision_starts_as_one_canary_replica_and_the_stable_keeps_its_own() -> None:
    world = World(spec_of("2.0.0"))
    plan = world.plan()
    assert plan.canary_replicas == 1 and plan.run is None
    assert plan.stable_spec.model.version == "1.0.0" and plan.stable_spec.replicas == 2
    assert (plan.rollout.phase, plan.rollout.step, plan.rollout.steps) == ("Progressing", 1, 1)
    assert plan.rollout.canary_revision == world.desired != world.stable_revision
    assert [event.reason for event in plan.events] == [reasons.CANARY_PROGRESSING]


def test_ready_canary_pods_get_an_analysis_against_them_and_the_stable_pods() -> None:
    world = World(spec_of("2.0.0"))
    world.plan()
    world.canary_ready(1)
    plan = world.plan()
    assert plan.run is not None and plan.rollout.phase == "Analyzing"
    assert plan.run.targets == ["http://10.1.0.50:8000"]
    assert plan.run.baseline == ["http://10.1.0.10:8000", "http://10.1.0.11:8000"]
    assert plan.rollout.analysis_job == plan.run.name
    # the same state gives the same Job name: a restarted operator finds the Job instead of starting another
    assert world.plan().rollout.analysis_job == plan.run.name


def test_a_passed_last_step_promotes_and_the_canary_goes_once_the_stable_pods_run_it() -> None:
    world = World(spec_of("2.0.0"))
    world.plan()
    world.canary_ready(1)
    name = world.plan().rollout.analysis_job
    assert name is not None
    world.finish(name, report())
    promoting = world.plan()
    assert promoting.stable_spec.model.version == "2.0.0" and promoting.canary_replicas == 1
    assert promoting.rollout.phase == "Progressing" and promoting.rollout.last_analysis
    assert promoting.rollout.last_analysis.passed
    # the stable Deployment now records 2.0.0 and rolls; the canary serves until it is done
    world.stored, world.stable_revision = world.spec, world.desired
    world.stable = render_deployment(world.spec, REF, IMAGE)
    rolling = world.plan()
    assert rolling.canary_replicas == 1 and rolling.rollout.phase == "Progressing"
    world.stable = rolled(world.stable)
    done = world.plan()
    assert done.canary_replicas is None and done.rollout.phase == "Promoted"
    assert done.rollout.reason == reasons.PROMOTED and done.rollout.stable_revision == world.desired
    assert [event.reason for event in done.events] == [reasons.PROMOTED]


def test_a_failed_gate_rolls_back_naming_the_gate_and_its_figure() -> None:
    world = World(spec_of("2.0.0"))
    world.plan()
    world.canary_ready(1)
    name = world.plan().rollout.analysis_job
    assert name is not None
    world.finish(name, report(error_rate=1.0, rejected=200))
    plan = world.plan()
    assert plan.rollout.phase == "RolledBack" and plan.rollout.reason == reasons.ROLLED_BACK
    assert plan.canary_replicas is None and plan.stable_spec.model.version == "1.0.0"
    assert "maxErrorRate: 1 is over the limit of 0" in plan.rollout.message
    assert plan.rollout.last_analysis is not None
    failed = [gate.gate for gate in plan.rollout.last_analysis.gates if not gate.passed]
    assert failed == ["maxErrorRate"]
    assert plan.events[-1].warning
    # it stays rolled back until the spec changes
    world.jobs.clear()
    assert world.plan().rollout.phase == "RolledBack"
    world.spec = spec_of("3.0.0")
    world.desired = revision(world.spec, REF, IMAGE)
    again = world.plan()
    assert again.rollout.phase == "Progressing" and again.canary_replicas == 1


def test_the_prediction_change_budget_rolls_back() -> None:
    world = World(spec_of("2.0.0", rollout={"steps": [{"analysis": {"gates": {"maxPredictionChangeRate": 0.05}}}]}))
    world.plan()
    world.canary_ready(1)
    name = world.plan().rollout.analysis_job
    assert name is not None
    world.finish(name, report(changed=60))
    plan = world.plan()
    assert plan.rollout.phase == "RolledBack"
    assert "maxPredictionChangeRate: 0.3 is over the limit of 0.05" in plan.rollout.message
    assert plan.rollout.last_analysis is not None and plan.rollout.last_analysis.prediction_change_rate == 0.3


def test_steps_scale_the_canary_in_turn() -> None:
    world = World(spec_of("2.0.0", rollout={"steps": [{"replicas": 1}, {"replicas": 2}]}))
    world.plan()
    world.canary_ready(1)
    first = world.plan().rollout.analysis_job
    assert first is not None
    world.finish(first, report())
    second = world.plan()
    assert (second.rollout.step, second.canary_replicas, second.rollout.phase) == (2, 2, "Progressing")
    world.canary_ready(2)
    analysing = world.plan()
    assert analysing.run is not None and len(analysing.run.targets) == 2 and analysing.run.name != first


def test_a_canary_not_ready_within_the_deadline_rolls_back() -> None:
    world = World(spec_of("2.0.0"))
    world.plan(NOW)
    plan = world.plan(LATER)
    assert plan.rollout.phase == "RolledBack" and plan.rollout.reason == reasons.CANARY_NOT_READY


def test_a_canary_whose_parameters_fail_verification_rolls_back_at_once() -> None:
    world = World(spec_of("2.0.0"))
    world.plan()
    world.fetch = FetchResult("False", reasons.SIGNATURE_INVALID, "the signature does not match")
    plan = world.plan()
    assert plan.rollout.phase == "RolledBack" and plan.rollout.reason == reasons.SIGNATURE_INVALID
    world.fetch = FetchResult("False", reasons.DOWNLOAD_FAILED, "connection refused")  # may pass: wait
    world.old = None
    assert world.plan().rollout.phase == "Progressing"


def test_a_job_without_a_report_fails_the_analysis() -> None:
    world = World(spec_of("2.0.0"))
    world.plan()
    world.canary_ready(1)
    name = world.plan().rollout.analysis_job
    assert name is not None
    world.finish(name, None, "the Job failed: DeadlineExceeded: Job was active longer than specified deadline")
    plan = world.plan()
    assert plan.rollout.reason == reasons.ANALYSIS_FAILED and "DeadlineExceeded" in plan.rollout.message


def test_a_newer_revision_replaces_the_canary_and_its_running_analysis_is_dropped() -> None:
    world = World(spec_of("2.0.0"))
    world.plan()
    world.canary_ready(1)
    name = world.plan().rollout.analysis_job
    assert name is not None
    world.jobs[name] = rollout.JobState(name, False)
    world.spec = spec_of("2.0.1")
    world.desired = revision(world.spec, REF, IMAGE)
    plan = world.plan()
    assert plan.stale_jobs == [name] and plan.rollout.step == 1 and plan.rollout.canary_revision == world.desired


def test_rolling_update_has_no_canary_and_reports_its_phase() -> None:
    world = World(spec_of("2.0.0", strategy="RollingUpdate"))
    plan = world.plan()
    assert plan.canary_replicas is None and plan.stable_spec.model.version == "2.0.0"
    assert plan.rollout.phase == "Progressing" and plan.rollout.strategy == "RollingUpdate"


def test_load_test_measures_each_revision_once_after_its_rollout() -> None:
    world = World(spec_of("1.0.0", strategy="RollingUpdate", loadTest={"durationSeconds": 10}))
    world.desired = world.stable_revision
    plan = world.plan()
    assert plan.rollout.phase == "Promoted" and plan.run is not None and plan.run.kind == "loadtest"
    assert plan.run.baseline == [] and len(plan.run.targets) == 2
    world.finish(plan.run.name, AnalysisReport(canary=report(p99=250.0).canary))
    measured = world.plan()
    assert measured.run is None and measured.load_tests is not None and len(measured.load_tests) == 1
    assert not measured.load_tests[0].passed and measured.load_tests[0].revision == world.desired
    assert "p99Ms: 250 is over the limit of 100" in measured.load_tests[0].message
    assert world.plan().run is None  # once per revision


def test_job_states_read_the_report_from_the_jobs_pod() -> None:
    line = report().line()
    jobs = [{"metadata": {"name": "a"}, "status": {"conditions": [{"type": "Complete", "status": "True"}]}},
            {"metadata": {"name": "b"}, "status": {"active": 1}},
            {"metadata": {"name": "c", "deletionTimestamp": NOW}, "status": {}}]
    pods = [{"metadata": {"labels": {"job-name": "a"}},
             "status": {"containerStatuses": [{"state": {"terminated": {"exitCode": 0, "message": line + "\n"}}}]}}]
    states = rollout.job_states(jobs, pods)
    assert set(states) == {"a", "b"} and states["a"].finished and not states["b"].finished
    assert states["a"].report == report()


def test_the_stable_deployment_records_the_spec_it_runs() -> None:
    spec = spec_of("2.0.0", policies=[{"name": "null-out", "action": "override", "value": None}])
    recorded = rollout.recorded_spec(render_deployment(spec, REF, IMAGE))
    assert recorded is not None and revision(recorded, REF, IMAGE) == revision(spec, REF, IMAGE)
    assert rollout.recorded_spec({"metadata": {"annotations": {"modeldeploy.io/revision-spec": "{"}}}) is None


def test_the_canary_is_a_second_deployment_behind_the_same_service() -> None:
    spec = spec_of("2.0.0")
    config, canary = render_canary(spec, REF, IMAGE, None, 3)
    assert canary["metadata"]["name"] == "iris-canary" and canary["spec"]["replicas"] == 3
    assert config["metadata"]["name"] == "iris-canary-config"
    labels = canary["spec"]["template"]["metadata"]["labels"]
    assert labels["modeldeploy.io/track"] == "canary" and labels["modeldeploy.io/revision"] == revision(spec, REF, IMAGE)
    stable_selector = render_deployment(spec, REF, IMAGE)["spec"]["selector"]["matchLabels"]
    assert stable_selector.items() <= labels.items()  # the Service (stable selector) sends it traffic
    volumes = {v["name"]: v for v in canary["spec"]["template"]["spec"]["volumes"]}
    assert volumes["config"]["configMap"]["name"] == "iris-canary-config"


def test_the_analysis_job_has_no_api_access_and_reports_in_its_termination_message() -> None:
    spec = spec_of("2.0.0")
    analysis = Analysis(inputs=InputsRef(config_map_name="iris-inputs"))
    job = render_analysis_job(spec, REF, IMAGE, "iris-canary-x", analysis, "canary", "abc",
                              ["http://10.1.0.50:8000"], ["http://10.1.0.10:8000"])
    pod = job["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False and job["spec"]["backoffLimit"] == 0
    container = pod["containers"][0]
    assert container["terminationMessagePath"] == "/dev/termination-log"
    assert container["command"] == LoadTestArgs(
        ("http://10.1.0.50:8000",), "iris", 30, users=4, samples=200, inputs="/etc/modeldeploy/inputs/inputs.jsonl",
        baseline=("http://10.1.0.10:8000",)).argv()
    assert "--baseline" in container["command"] and "--compare" in container["command"]
    assert {"name": "inputs", "configMap": {"name": "iris-inputs", "items": [
        {"key": "inputs.jsonl", "path": "inputs.jsonl"}]}} in pod["volumes"]
    assert job["metadata"]["labels"]["app.kubernetes.io/name"] != "model-server"  # not one of the model's pods


@pytest.mark.parametrize(("gates", "failed"), [
    (Gates(), []),
    (Gates(p99_ms=4.0), ["p99Ms"]),
    (Gates(min_rps=50.0), ["minRps"]),
    (Gates(max_policy_reject_rate=0.0), ["maxPolicyRejectRate"]),
])
def test_gates(gates: Gates, failed: list[str]) -> None:
    results = evaluate_gates(report(rejected=10), gates)
    assert [result.gate for result in results if not result.passed] == failed


def test_a_gate_without_a_figure_fails() -> None:
    results = evaluate_gates(AnalysisReport(canary=report().canary), Gates(max_prediction_change_rate=0.1))
    assert [(r.gate, r.passed, r.actual) for r in results][-1] == ("maxPredictionChangeRate", False, None)
    verdict = judge(AnalysisReport(error="GET /api/models/iris: connection refused"), Gates(), revision="r",
                    version="1", step=1, job="j", finished_at=NOW)
    assert not verdict.passed and verdict.message == "analysis failed: GET /api/models/iris: connection refused"


def test_the_report_fits_a_termination_message() -> None:
    assert len(report().line()) < 4096 and AnalysisReport.parse("noise\n" + report().line()) == report()
