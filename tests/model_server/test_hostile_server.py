"""Issue 11 against the server: it loads only signed bytes, and bad input never costs
availability. Each test names the case of the issue it covers."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import joblib
import pytest
import yaml
from server_support import PUBLIC_KEY, SETOSA, app_client

from modeldeploy.params import signing
from modeldeploy.params.errors import VerificationError

pytestmark = pytest.mark.anyio

PREDICT = "/api/models/iris/prediction"
PRICING = "/api/models/pricing/prediction"
ROW = {"age": 40, "smoker": False, "cost": 100.0}


def copy_of(model_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(model_dir, tmp_path / model_dir.name))


def edit_card(model_dir: Path, **changes: Any) -> None:
    card = yaml.safe_load((model_dir / "model.yaml").read_text())
    card.update(changes)
    (model_dir / "model.yaml").write_text(yaml.safe_dump(card, sort_keys=False))


async def load_error(model_dir: Path) -> str:
    async with app_client(model_dir) as client:
        health = await client.get("/api/health")
        assert health.status_code == 503, health.text
        assert (await client.get("/api/health/ready")).status_code == 503
        return str(health.json()["model"]["error"])


class Canary:
    """A pickle that leaves a file behind when it is unpickled."""

    def __init__(self, flag: Path) -> None:
        self.flag = str(flag)

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.write_text, (Path(self.flag), "unpickled"))


# --- case 1: what a flavor opens must be a signed file inside the tree ----------------------


@pytest.mark.parametrize("artifact", ["absolute", "dotdot"])
async def test_1_artifact_outside_the_tree_is_never_unpickled(
    iris_dir: Path, tmp_path: Path, seal: Callable[[Path], Path], artifact: str
) -> None:
    flag = tmp_path / "pwned"
    evil = tmp_path / "evil.joblib"
    joblib.dump(Canary(flag), evil)
    model = copy_of(iris_dir, tmp_path / "m")
    edit_card(model, artifact=str(evil) if artifact == "absolute" else "../../evil.joblib")
    seal(model)  # the signature covers the tree, not the pickle outside it
    assert "UnsafeFile" in await load_error(model)
    assert not flag.exists()


async def test_1_pickle_under_an_ignore_path_of_the_signature_is_refused(
    iris_dir: Path, tmp_path: Path, signing_keys: tuple[Path, Path]
) -> None:
    import subprocess
    import sys

    from modeldeploy.params import fetch

    flag = tmp_path / "pwned"
    model = copy_of(iris_dir, tmp_path / "m")
    done = subprocess.run(
        [str(Path(sys.executable).with_name("model_signing")), "sign", "key", str(model),
         "--signature", str(model / "model.sig"), "--private_key", str(signing_keys[0]),
         "--ignore-paths", str(model / "model.joblib")],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    joblib.dump(Canary(flag), model / "model.joblib")
    (model / "verified-manifest.json").unlink(missing_ok=True)
    dest = tmp_path / "pod" / "model"
    dest.parent.mkdir()
    try:
        fetch.fetch(str(model), dest, PUBLIC_KEY[0])  # the init container
    except VerificationError as err:
        assert err.reason == "FilesDiffer" and err.files == ["model.joblib"]
        dest = model  # and the server refuses the tree by itself too
    assert "FilesDiffer" in await load_error(dest)
    assert not flag.exists()


async def test_1_onnx_artifact_through_a_symlink_is_refused(
    onnx_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = copy_of(onnx_dir, tmp_path / "m")
    outside = tmp_path / "outside.onnx"
    outside.write_bytes((model / "model.onnx").read_bytes())  # any graph the attacker likes
    real = signing.verify_tree

    def verify_then_link(*args: Any, **kwargs: Any) -> signing.VerifiedTree:
        tree = real(*args, **kwargs)
        (model / "model.onnx").unlink()
        (model / "model.onnx").symlink_to(outside)  # after the check, before the load
        return tree

    monkeypatch.setattr(signing, "verify_tree", verify_then_link)
    assert "UnsafeFile" in await load_error(model)


async def test_1_python_entrypoint_outside_the_tree_is_refused(
    pricing_dir: Callable[..., Path], seal: Callable[[Path], Path]
) -> None:
    model = pricing_dir()
    edit_card(model, entrypoint="subprocess:Popen")
    seal(model)
    assert "FileNotSigned" in await load_error(model)


# --- case 2: the load-time check verifies the signature, and hashes what it loads ----------


async def test_2_forged_verified_manifest_does_not_make_a_pickle_load(
    iris_dir: Path, tmp_path: Path
) -> None:
    flag = tmp_path / "pwned"
    model = copy_of(iris_dir, tmp_path / "m")
    joblib.dump(Canary(flag), model / "model.joblib")
    digest = signing._digest("sha256", (model / "model.joblib").read_bytes())
    (model / "verified-manifest.json").write_text(json.dumps({"files": {"model.joblib": digest}}))
    assert "FilesDiffer" in await load_error(model)
    assert not flag.exists()


async def test_2_server_without_the_trusted_key_loads_nothing(iris_dir: Path) -> None:
    async with app_client(iris_dir, public_key=None) as client:
        error = (await client.get("/api/health")).json()["model"]["error"]
        assert "PublicKeyInvalid" in error


async def test_2_signature_by_another_key_is_refused_at_load(
    iris_dir: Path, tmp_path: Path
) -> None:
    other = signing.generate_key()
    (tmp_path / "other.pem").write_bytes(signing.public_key_pem(other.public_key()))
    async with app_client(iris_dir, public_key=tmp_path / "other.pem") as client:
        assert "KeyMismatch" in (await client.get("/api/health")).json()["model"]["error"]


async def test_2_a_swap_between_check_and_load_is_caught(
    iris_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    flag = tmp_path / "pwned"
    model = copy_of(iris_dir, tmp_path / "m")
    real = signing.verify_tree

    def verify_then_swap(*args: Any, **kwargs: Any) -> signing.VerifiedTree:
        tree = real(*args, **kwargs)
        joblib.dump(Canary(flag), model / "swap.joblib")
        (model / "swap.joblib").replace(model / "model.joblib")  # the attacker wins the race
        return tree

    monkeypatch.setattr(signing, "verify_tree", verify_then_swap)
    assert "FilesDiffer" in await load_error(model)
    assert not flag.exists()


# --- case 3: /metrics labels only from served models ---------------------------------------


async def test_3_unknown_model_names_share_one_label(iris_dir: Path) -> None:
    async with app_client(iris_dir) as client:
        before = len((await client.get("/metrics")).text)
        for index in range(200):
            assert (await client.post(f"/api/models/m{index}/prediction", json=SETOSA)).status_code == 404
            assert (await client.get(f"/v2/models/m{index}/ready")).status_code == 404
        text = (await client.get("/metrics")).text
        assert 'model="m1"' not in text and 'model="_unknown"' in text
        assert len(text) < before + 20_000


# --- case 6: schema-valid input never answers 5xx; a failing policy is a 422 naming it ------


async def test_6_integers_beyond_int64_are_400_not_500(
    iris_dir: Path, pricing_dir: Callable[..., Path], tmp_path: Path, seal: Callable[[Path], Path]
) -> None:
    pricing = pricing_dir()
    card = yaml.safe_load((pricing / "model.yaml").read_text())
    card["inputs"][0].pop("maximum")  # age: any integer the schema allows
    edit_card(pricing, inputs=card["inputs"])
    seal(pricing)
    policies = [{"name": "old", "when": "input.age > 200", "action": "reject"}]
    async with app_client(pricing, policies=policies) as client:
        huge = '{"age": 1' + "0" * 30 + ', "smoker": false, "cost": 1.0}'
        response = await client.post(PRICING, content=huge)
        assert response.status_code == 400 and "age" in response.text, response.text
        metadata = (await client.get("/api/models/pricing/metadata")).json()
        assert metadata["inputSchema"]["anyOf"][0]["properties"]["age"]["maximum"] == 2**63 - 1
    iris = copy_of(iris_dir, tmp_path / "m")
    card = yaml.safe_load((iris / "model.yaml").read_text())
    card["inputs"][0]["type"] = "integer"
    edit_card(iris, inputs=card["inputs"])
    seal(iris)
    async with app_client(iris) as client:
        row = {**SETOSA, "sepal_length": 10**400}
        response = await client.post(PREDICT, content=json.dumps(row))
        assert response.status_code == 400, response.text
        ok = await client.post(PREDICT, json={**SETOSA, "sepal_length": 5})
        assert ok.status_code == 200


async def test_6_a_policy_failing_at_run_time_is_a_422_naming_policy_and_row(
    pricing_dir: Callable[..., Path]
) -> None:
    policies = [{"name": "ratio", "when": "100 / (input.age - 50) > 1", "action": "reject"}]
    async with app_client(pricing_dir(), policies=policies) as client:
        response = await client.post(PRICING, json=[ROW, {**ROW, "age": 50}])
        assert response.status_code == 422, response.text
        body = response.json()
        assert body["type"] == "PolicyFailed" and body["policy"] == "ratio" and body["index"] == 1
        assert "ratio" in body["error"]


# --- case 7: the python flavor leaves the verified directory as it found it ------------------


async def test_7_python_flavor_writes_no_pycache_and_loads_again(
    pricing_dir: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    monkeypatch.setattr(sys, "dont_write_bytecode", False)  # as in a server container
    model = pricing_dir()
    for _ in range(2):
        async with app_client(model) as client:
            assert (await client.post(PRICING, json=ROW)).status_code == 200
        assert not list(model.rglob("__pycache__")), "bytecode written into the verified directory"


# --- case 9: an expensive policy never stalls the probes ------------------------------------


async def test_9_probes_answer_during_a_slow_policy_and_the_budget_bounds_it(
    pricing_dir: Callable[..., Path]
) -> None:
    numbers = f"[{','.join(str(i) for i in range(1, 13))}]"  # CEL's iteration budget allows no larger cube
    cube = f"{numbers}.map(x, {numbers}.map(y, {numbers}.map(z, x * y * z))).size() > 0"
    never = cube.replace("> 0", "< 0")  # false only once it has been computed: every row costs the whole policy
    slow = " && ".join([cube] * 3 + [never])  # 6,912 products per row, within the 1,024 characters of a policy
    assert len(slow) <= 1024
    policies = [{"name": "expensive", "when": slow, "action": "reject"}]
    async with app_client(pricing_dir(), policies=policies, policy_timeout_seconds=0.2) as client:
        began = time.monotonic()
        prediction = asyncio.create_task(client.post(PRICING, json=[ROW] * 64))
        await asyncio.sleep(0.05)
        probe_times = []
        while not prediction.done():
            started = time.monotonic()
            assert (await client.get("/api/health")).status_code == 200
            probe_times.append(time.monotonic() - started)
            await asyncio.sleep(0.05)
        response = await prediction
        assert response.status_code == 422 and response.json()["type"] == "PolicyFailed", response.text
        assert "policyTimeoutSeconds" in response.json()["error"]
        assert time.monotonic() - began < 10
        assert probe_times and max(probe_times) < 1.0  # the kubelet waits timeoutSeconds (5)


# --- case 12: protocol conformance --------------------------------------------------------

INFER = "/v2/models/iris/infer"


def columns(datatype: str = "FP64", **data: Any) -> dict[str, Any]:
    values = {**SETOSA, **data}
    return {"inputs": [{"name": k, "shape": [1], "datatype": datatype, "data": [v]} for k, v in values.items()]}


async def test_12_method_not_allowed_says_which_are(iris_dir: Path) -> None:
    async with app_client(iris_dir) as client:
        for method, path in (("DELETE", "/api/health"), ("GET", PREDICT), ("PUT", INFER)):
            response = await client.request(method, path)
            assert response.status_code == 405 and response.headers.get("allow"), (method, path)
        assert "POST" in (await client.get(PREDICT)).headers["allow"]


@pytest.mark.parametrize(
    "body",
    [columns("BYTES"), columns("FOO"), columns("BOOL"), columns("INT64", sepal_length=5.1),
     {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "BYTES", "data": [5.1, 3.5, 1.4, 0.2]}]}],
    ids=["bytes-with-floats", "unknown", "bool", "int-with-float", "matrix-bytes"],
)
async def test_12_datatype_is_checked_against_the_model(iris_dir: Path, body: dict[str, Any]) -> None:
    async with app_client(iris_dir) as client:
        response = await client.post(INFER, json=body)
        assert response.status_code == 400, response.text
        assert "datatype" in response.text or "value" in response.text


async def test_12_requested_outputs_are_honoured(pricing_dir: Callable[..., Path], iris_dir: Path) -> None:
    async with app_client(iris_dir) as client:
        chosen = await client.post(INFER, json={**columns("FP32"), "outputs": [{"name": "species"}]})
        assert [o["name"] for o in chosen.json()["outputs"]] == ["species"], chosen.text
        none = await client.post(INFER, json={**columns(), "outputs": []})
        assert none.status_code == 200 and none.json()["outputs"] == []
        unknown = await client.post(INFER, json={**columns(), "outputs": [{"name": "colour"}]})
        assert unknown.status_code == 400 and "colour" in unknown.text


async def test_12_published_v2_schema_refuses_what_the_server_refuses(iris_dir: Path) -> None:
    import jsonschema_rs

    async with app_client(iris_dir) as client:
        operation = (await client.get("/openapi.json")).json()["paths"]["/v2/models/{name}/infer"]["post"]
        validator = jsonschema_rs.validator_for(operation["requestBody"]["content"]["application/json"]["schema"])
        accepted = [columns(), columns("FP32"), columns("INT64", sepal_length=5, sepal_width=3, petal_length=1,
                                                        petal_width=0),
                    {"inputs": [{"name": "m", "shape": [1, 4], "datatype": "FP64", "data": [[5.1, 3.5, 1.4, 0.2]]}]}]
        for body in accepted:
            assert (await client.post(INFER, json=body)).status_code == 200, body
            assert validator.is_valid(body), body
        refused = [{"inputs": [{"data": [], "datatype": "", "name": "", "shape": [0]}]}, columns("BYTES"),
                   {"inputs": columns()["inputs"][:3]}, {**columns(), "outputs": [{"name": "colour"}]}]
        for body in refused:
            assert (await client.post(INFER, json=body)).status_code == 400, body
            assert not validator.is_valid(body), body
