"""The whole retrain chain on a tiny generated dataset, run twice."""

import json

import pytest
import yaml
from mlflow.tracking import MlflowClient

from visiongate import nochange
from visiongate.config import load_params
from visiongate.paths import Project
from visiongate.tracking import tracking_uri

pytestmark = pytest.mark.integration


def test_retrain_flow_registers_gates_and_promotes(tiny_project, prefect_harness):
    from flows.retrain import retrain

    params_path = tiny_project / "params.yaml"
    params = yaml.safe_load(params_path.read_text())
    params["insight"] = {"heatmaps": True, "test_map": True, "suspects": True}  # the default
    params["serve"] = {"export": ["onnx", "openvino", "openvino-bf16"]}  # the default
    params_path.write_text(yaml.safe_dump(params))
    first = retrain(str(tiny_project))

    lock = yaml.safe_load((tiny_project / "dvc.lock").read_text())
    pinned = {o["path"].rsplit("/", 1)[-1]: o["md5"].removesuffix(".dir")
              for o in lock["stages"]["synthesize"]["outs"]}
    assert set(pinned) == {"train", "val", "test"}
    assert (tiny_project / "data/prepared/shapes/train/annotations.json").exists()

    client = MlflowClient(tracking_uri(tiny_project, load_params(tiny_project / "params.yaml").mlflow))
    assert [o.name for o in first] == ["shapes-detect", "shapes-segment"]
    for outcome in first:
        run = client.get_run(outcome.run_id)
        assert run.info.status == "FINISHED"
        for split, md5 in pinned.items():
            assert run.data.params[f"data.md5.{split}"] == md5
        assert any(k.startswith("test/") for k in run.data.metrics)
        assert any(m.step == 1 for k in run.data.metrics
                   for m in client.get_metric_history(outcome.run_id, k)), "no per-epoch metric"
        artifacts = {f.path for f in client.list_artifacts(outcome.run_id)}
        assert "gate_report.md" in artifacts
        report = client.download_artifacts(outcome.run_id, "gate_report.md")
        report_text = open(report).read()
        assert outcome.name in report_text
        # what the run shows beside its numbers: heatmaps, the test-split map, suspects
        insight = {f.path for d in ("plots", "map", "suspects")
                   for f in client.list_artifacts(outcome.run_id, d)}
        assert {"plots/heatmaps.png", "plots/test_map.png", "map/embeddings.npz",
                "suspects/suspects.csv"} <= insight, insight
        assert "## Seeing inside the model and the data" in report_text
        assert "![heatmaps](plots/heatmaps.png)" in report_text
        if outcome.name == "shapes-detect":  # robustness configured for the detector only
            assert "## Robustness" in report_text and "fog" in report_text
            assert "robust/blur/map50" in run.data.metrics
        # the serving artifacts, each checked against PyTorch on the same test split
        assert "## Serving artifacts" in report_text and "| onnx |" in report_text
        assert run.data.tags["serve.runtime"] in ("torch", "onnx", "openvino", "openvino-bf16")
        assert "serve/onnx_ms" in run.data.metrics
        assert outcome.verdict.passed, outcome.verdict
        version = client.get_model_version(outcome.name, outcome.version)
        assert set(version.aliases) == {"champion", "challenger"}
        assert version.tags["data.md5.test"] == pinned["test"]
        assert version.tags["gate.passed"] == "true"

    unchanged = retrain(str(tiny_project))           # same data, params, code: no work
    for before, after in zip(first, unchanged, strict=True):
        assert after.status == "unchanged" and after.version == before.version
        assert after.champion_version == before.version and after.run_id is None
        assert len(client.search_model_versions(f"name='{before.name}'")) == 1
    # the command line's early answer (visiongate.nochange) agrees with the flow's
    params = load_params(tiny_project / "params.yaml", deep=False)
    quick = nochange.check(Project.at(tiny_project), params,
                           nochange.own_store(Project.at(tiny_project), params))
    assert [(o.name, o.status, o.version, o.champion_version) for o in quick] == \
        [(o.name, o.status, o.version, o.champion_version) for o in unchanged]

    second = retrain(str(tiny_project), force=True)

    for before, after in zip(first, second, strict=True):
        name = after.name
        assert after.champion_version == before.version, "champion was not re-evaluated"
        assert after.champion_metrics is not None
        champion = client.get_model_version_by_alias(name, "champion")
        assert str(champion.version) == after.version
        previous = client.get_model_version_by_alias(name, "previous-champion")
        assert str(previous.version) == before.version
        versions = [client.get_model_version(name, v.version)  # search omits aliases
                    for v in client.search_model_versions(f"name='{name}'")]
        assert len(versions) == 2
        assert sum("champion" in v.aliases for v in versions) == 1


def test_refused_candidate_leaves_the_champion_untouched(tiny_project, prefect_harness, capsys):
    from flows.cli import GATE_REFUSED, main
    from flows.retrain import retrain

    params_path = tiny_project / "params.yaml"
    params = yaml.safe_load(params_path.read_text())
    params["segment"]["enabled"] = False
    params_path.write_text(yaml.safe_dump(params))
    (champion,) = retrain(str(tiny_project))

    params["detect"]["gate"]["floors"] = {"map50": 1.01}  # no model can pass this
    params_path.write_text(yaml.safe_dump(params))
    assert main(["retrain", "--root", str(tiny_project)]) == GATE_REFUSED

    client = MlflowClient(tracking_uri(tiny_project, load_params(params_path).mlflow))
    assert str(client.get_model_version_by_alias("shapes-detect", "champion").version) == champion.version
    challenger = client.get_model_version_by_alias("shapes-detect", "challenger")
    assert str(challenger.version) != champion.version
    assert challenger.tags["gate.passed"] == "false"
    assert set(challenger.aliases) == {"challenger"}
    run = client.get_run(challenger.run_id)
    assert run.data.tags["gate.passed"] == "false" and "floor 1.010" in run.data.tags["gate.reasons"]

    capsys.readouterr()
    assert main(["evaluate", "--model", "models:/shapes-detect@champion",
                 "--root", str(tiny_project)]) == 0
    out = capsys.readouterr().out
    # DVC's log handler was bound to pytest's captured stdout by the earlier flow run, so
    # its "didn't change" line lands here; from a shell it goes to stderr (see cli.py).
    scored = json.loads(out[out.index("{\n"):])
    assert scored["model"] == f"shapes-detect/{champion.version}"
    assert scored["data_md5"] == champion_run_md5(client, champion.run_id)
    for key, value in champion.metrics.items():  # same checkpoint, same pinned split
        assert scored["metrics"][key] == pytest.approx(value, nan_ok=True, abs=1e-6) or (
            value != value and scored["metrics"][key] is None)


def champion_run_md5(client, run_id):
    return client.get_run(run_id).data.params["data.md5.test"]
