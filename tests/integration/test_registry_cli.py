"""`visiongate promote`, `rollback` and `models list` on a real MLflow sqlite store."""

from __future__ import annotations

import json

import pytest

from flows.cli import main
from visiongate import models, moves, registry, tracking
from visiongate.config import MlflowConfig, SegmentConfig, SynthConfig
from visiongate.datasets import synth
from visiongate.datasets.coco import load_split

pytestmark = pytest.mark.integration
NAME = "shapes-segment"


@pytest.fixture
def store(tmp_path, monkeypatch) -> dict:
    """Three versions of one tiny real U-Net (logged once), v3 the challenger, no champion."""
    monkeypatch.setenv("LOGNAME", "alice")  # getpass.getuser() reads LOGNAME first
    root = tmp_path / "project"
    root.mkdir()
    (root / "params.yaml").write_text("dataset: shapes\n")
    synth.generate(SynthConfig(seed=2, image_size=32, splits={"train": 4, "val": 2, "test": 2}),
                   root / "data")
    checkpoint = models.train(SegmentConfig(epochs=1, imgsz=32, batch=2, base_channels=4),
                              root / "data", root / "work")
    uri = tracking.tracking_uri(root, MlflowConfig())
    run_id = tracking.start_run(uri, tracking.ensure_experiment(uri, root, MlflowConfig()),
                                NAME, {}, {})
    tracking.log_metrics(uri, run_id, {"test/miou": 0.61, "test/dice": 0.7, "test/pixel_acc": 0.9})
    split = load_split(root / "data" / "test")
    model_uri = tracking.log_model(uri, run_id, checkpoint, split.image_path(split.images[0]))
    for gate in ("true", "false", "true"):
        registry.register(uri, NAME, model_uri, {"gate.passed": gate, "run_id": run_id})
    return {"root": str(root), "uri": uri}


def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _aliases(uri: str) -> dict[str, tuple[str, ...]]:
    return {v: registry.get(uri, NAME, v).aliases for v in ("1", "2", "3")}


def test_promote_override_then_rollback_are_recorded(store, capsys):
    uri, root = store["uri"], ("--root", store["root"])
    assert _cli(capsys, "promote", NAME, "1", "--reason", "first release", *root)[0] == 0
    code, out, err = _cli(capsys, "promote", NAME, "2", "--reason", "hotfix for client X", *root)
    assert code == 0 and "v1 is previous-champion" in out
    assert "did not pass its gate" in err  # v2's gate refused it: an explicit override
    assert _aliases(uri) == {"1": ("previous-champion",), "2": ("champion",), "3": ("challenger",)}
    v2 = registry.get(uri, NAME, "2").tags
    assert (v2["promoted_by"], v2["promotion_reason"], v2["promoted_from"]) == (
        "user alice", "hotfix for client X", "1")
    retired = registry.get(uri, NAME, "1").tags["retired_reason"]
    assert retired == "replaced by v2: hotfix for client X"

    code, out, _ = _cli(capsys, "rollback", NAME, "--reason", "v2 misbehaves", *root)
    assert code == 0 and "v1 is champion again" in out
    assert _aliases(uri) == {"1": ("champion",), "2": (), "3": ("challenger",)}
    assert registry.get(uri, NAME, "2").tags["rolled_back_reason"] == "v2 misbehaves"
    assert registry.get(uri, NAME, "1").tags["promotion_action"] == "rollback"
    code, _, err = _cli(capsys, "rollback", NAME, *root)  # nothing left to roll back to
    assert code == 1 and "previous-champion" in err

    history = [(m["action"], m["version"], m["replaced"], m["by"])
               for m in moves.history(uri, NAME)]
    assert history == [("promote", "1", None, "user alice"), ("promote", "2", "1", "user alice"),
                     ("rollback", "1", "2", "user alice")]


def test_promote_errors_and_no_op(store, capsys):
    root = ("--root", store["root"])
    code, _, err = _cli(capsys, "promote", NAME, "9", "--reason", "x", *root)
    assert code == 1 and "no version 9" in err
    code, _, err = _cli(capsys, "promote", "no-such-model", "1", "--reason", "x", *root)
    assert code == 1 and "no-such-model" in err
    with pytest.raises(SystemExit):  # the reason is required
        main(["promote", NAME, "1", *root])
    assert _cli(capsys, "promote", NAME, "3", "--reason", "x", *root)[0] == 0
    code, out, _ = _cli(capsys, "promote", NAME, "3", "--reason", "again", *root)
    assert code == 0 and "already champion" in out
    assert len(moves.history(store["uri"], NAME)) == 1


def test_models_list_shows_versions_aliases_and_metrics(store, capsys):
    root = ("--root", store["root"])
    _cli(capsys, "promote", NAME, "3", "--reason", "x", *root)
    code, out, _ = _cli(capsys, "models", "list", "--json", *root)
    assert code == 0
    (model,) = json.loads(out)
    assert model["name"] == NAME
    assert [(v["version"], v["aliases"], v["gate"]) for v in model["versions"]] == [
        ("3", ["challenger", "champion"], "true"), ("2", [], "false"), ("1", [], "true")]
    assert model["versions"][0]["metrics"] == {"miou": 0.61, "dice": 0.7, "pixel_acc": 0.9}

    code, out, _ = _cli(capsys, "models", "list", "--name", NAME, *root)
    assert code == 0
    line = next(ln for ln in out.splitlines() if ln.strip().startswith("v3"))
    assert "challenger, champion" in line and "miou=0.610" in line and "dice=0.700" in line
    code, _, err = _cli(capsys, "models", "list", "--name", "nope", *root)
    assert code == 1 and "nope" in err


def test_a_retried_registration_finishes_the_half_registered_version(store):
    """The server dropped after the version was created, before its alias: the task's retry
    completes that version rather than creating another."""
    uri = store["uri"]
    client = registry.MlflowClient(uri)
    v3 = registry.get(uri, NAME, "3")
    client.delete_registered_model_alias(NAME, registry.CHALLENGER)
    again = registry.register(uri, NAME, v3.source, {"gate.passed": "true", "run_id": "x"})
    assert again.version == "3" and registry.CHALLENGER in again.aliases
    assert sorted(int(v.version) for v in client.search_model_versions(f"name='{NAME}'")) == [1, 2, 3]
    # with the alias in place, registering the same model again is a new version, as before
    assert registry.register(uri, NAME, v3.source, {"gate.passed": "true"}).version == "4"
