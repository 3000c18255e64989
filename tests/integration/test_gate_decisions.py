"""The gate end to end on the real flow: a worse candidate is refused (the paired bootstrap
over the test images is 95 % sure it dropped beyond max_drop) and the champion stays; a
better one is promoted. U-Net only: it is deterministic on the CPU, so "worse" and
"better" are facts about these settings, checked before the verdicts."""

import pytest
import yaml
from mlflow.tracking import MlflowClient

from visiongate.config import load_params
from visiongate.tracking import tracking_uri

pytestmark = pytest.mark.integration


def _run(project, params: dict, epochs: int):
    from flows.retrain import retrain

    params["segment"]["epochs"] = epochs
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    (outcome,) = retrain(str(project))
    return outcome


def test_worse_candidate_refused_then_better_one_promoted(tiny_project, prefect_harness):
    params = yaml.safe_load((tiny_project / "params.yaml").read_text())
    params["detect"]["enabled"] = False
    # 16 test images and lr 0.01: the paired bootstrap is sure of the 1-epoch model's drop
    # (a probe: miou 0.026 after 1 epoch, 0.113 after 8, 0.174 after 12)
    params["synth"]["splits"]["test"] = 16
    params["segment"]["lr"] = 0.01
    params["segment"]["gate"] = {"floors": {"miou": 0.0}, "max_drop": {"miou": 0.01}}
    client = MlflowClient(tracking_uri(tiny_project, load_params(tiny_project / "params.yaml").mlflow))

    champion = _run(tiny_project, params, epochs=8)
    assert champion.verdict.passed and champion.champion_version is None

    worse = _run(tiny_project, params, epochs=1)
    drop = champion.metrics["miou"] - worse.metrics["miou"]
    assert drop > 0.01, f"precondition: 1 epoch should be worse than 8 (drop {drop:.4f})"
    # the champion was re-scored now on the same pinned split: the same number as when it won
    assert worse.champion_metrics["miou"] == pytest.approx(champion.metrics["miou"], abs=1e-6)
    assert not worse.verdict.passed, worse.verdict.checks
    assert any(r.startswith("miou") and "max drop 0.010" in r for r in worse.verdict.reasons)
    # judged on the paired bootstrap over the test images, from the records evaluation wrote
    check = next(c for c in worse.verdict.checks if c.name == "no-regression:miou")
    assert check.low is not None and check.estimate < -0.01, check
    assert "95% confident it dropped more than that" in check.detail
    records = tiny_project / ".cache" / "records" / worse.run_id
    assert {p.name for p in records.iterdir()} == {"candidate.npz", "champion.npz"}
    name = champion.name
    assert str(client.get_model_version_by_alias(name, "champion").version) == champion.version
    refused = client.get_model_version(name, worse.version)
    assert set(refused.aliases) == {"challenger"} and refused.tags["gate.passed"] == "false"
    report = open(client.download_artifacts(worse.run_id, "gate_report.md")).read()
    assert f"# {name}: KEEP CHAMPION" in report
    assert "❌ `no-regression:miou`" in report and f"champion (v{champion.version})" in report
    assert "| miou | " in report and "95% interval" in report
    artifacts = {f.path for f in client.list_artifacts(worse.run_id, "plots")}
    assert {"plots/confusion_matrix.png", "plots/worst_images.png"} <= artifacts
    assert "[worst_images.png](plots/worst_images.png)" in report

    better = _run(tiny_project, params, epochs=12)
    assert better.metrics["miou"] > champion.metrics["miou"] - 0.01
    assert better.verdict.passed, better.verdict
    assert str(client.get_model_version_by_alias(name, "champion").version) == better.version
    assert str(client.get_model_version_by_alias(name, "previous-champion").version) == champion.version
    report = open(client.download_artifacts(better.run_id, "gate_report.md")).read()
    assert f"# {name}: PROMOTE" in report and "✅ `no-regression:miou`" in report
