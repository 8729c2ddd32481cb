"""The alert rules and the dashboard as files: `promtool check rules` and `promtool test rules` on the PrometheusRule.

`alerts_test.yaml` feeds input series to the rules (extracted from the PrometheusRule's
spec.groups) and states which alerts fire and which do not.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import yaml
from prometheus_support import MONITORING, binary, dashboard_queries, rules_document

HERE = Path(__file__).resolve().parent


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([binary("promtool"), *args], cwd=cwd, capture_output=True, text=True, timeout=60,
                          check=False)


def test_the_prometheusrule_passes_promtool_check_and_its_unit_tests(tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rules_document()))
    shutil.copy(HERE / "alerts_test.yaml", tmp_path)
    checked = promtool("check", "rules", "rules.yaml", cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = promtool("test", "rules", "alerts_test.yaml", cwd=tmp_path)
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_promtool_refuses_a_rule_that_does_not_parse(tmp_path: Path) -> None:
    broken = rules_document()
    broken["groups"][0]["rules"][0]["expr"] = "sum by (model (rate(modeldeploy_requests_total[5m]))"
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(broken))
    checked = promtool("check", "rules", "rules.yaml", cwd=tmp_path)
    assert checked.returncode != 0 and "parse error" in checked.stdout + checked.stderr


def test_every_alert_has_a_unit_test_that_fires_it() -> None:
    alerts = {rule["alert"] for group in rules_document()["groups"] for rule in group["rules"] if "alert" in rule}
    tests = yaml.safe_load((HERE / "alerts_test.yaml").read_text())["tests"]
    fired = {case["alertname"] for test in tests for case in test.get("alert_rule_test", []) if case["exp_alerts"]}
    assert alerts == fired


def test_the_dashboard_has_namespace_and_model_variables_and_a_query_per_panel() -> None:
    dashboard = json.loads((MONITORING / "grafana-dashboard-model.json").read_text())
    assert {"namespace", "model"} <= {v["name"] for v in dashboard["templating"]["list"]}
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert all(p.get("targets") for p in panels) and len({p["id"] for p in dashboard["panels"]}) == len(
        dashboard["panels"])
    assert all("$" not in expr for _, expr in dashboard_queries(
        {"namespace": "ns", "model": "iris", "__rate_interval": "1m", "datasource": "p"}))


def test_the_monitoring_kustomization_names_the_rules_and_the_dashboard() -> None:
    kustomization = yaml.safe_load((MONITORING / "kustomization.yaml").read_text())
    assert kustomization["resources"] == ["prometheusrule.yaml"]
    assert kustomization["configMapGenerator"][0]["files"] == ["grafana-dashboard-model.json"]
    top = yaml.safe_load((MONITORING.parent / "kustomization.yaml").read_text())
    assert "monitoring" not in " ".join(top["resources"])  # the CRD may be absent where the operator installs
