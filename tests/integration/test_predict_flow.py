"""`visiongate predict`: the Prefect batch flow with a registered champion, bad files included."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from flows.cli import main
from visiongate import models, moves, registry, tracking
from visiongate.config import DetectConfig, MlflowConfig, SynthConfig
from visiongate.datasets import synth
from visiongate.datasets.coco import load_split

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> dict:
    """A project whose store holds a tiny real YOLO as shapes-detect v1 = champion."""
    root = tmp_path_factory.mktemp("predict")
    (root / "params.yaml").write_text("dataset: shapes\n")
    synth.generate(SynthConfig(seed=3, image_size=64, splits={"train": 8, "val": 4, "test": 4}),
                   root / "data")
    checkpoint = models.train(DetectConfig(epochs=1, imgsz=64, batch=4), root / "data",
                              root / "work")
    uri = tracking.tracking_uri(root, MlflowConfig())
    run_id = tracking.start_run(uri, tracking.ensure_experiment(uri, root, MlflowConfig()),
                                "shapes-detect", {}, {})
    split = load_split(root / "data" / "test")
    images = [split.image_path(im) for im in split.images]
    version = registry.register(uri, "shapes-detect",
                                tracking.log_model(uri, run_id, checkpoint, images[0]), {})
    moves.promote(uri, "shapes-detect", version.version, "test fixture")
    return {"root": root, "checkpoint": checkpoint, "images": images}


def test_predict_writes_coco_predictions_and_overlays_and_skips_bad_files(
        project, prefect_harness, tmp_path, capsys):
    incoming, out = tmp_path / "incoming", tmp_path / "out"
    (incoming / "day2").mkdir(parents=True)
    for i, image in enumerate(project["images"]):
        shutil.copy(image, incoming / ("day2" if i % 2 else ".") / image.name)
    (incoming / "broken.png").write_bytes(project["images"][0].read_bytes()[:100])
    (incoming / "notes.txt").write_text("not an image")

    code = main(["predict", "--model", "models:/shapes-detect@champion", str(incoming),
                 "--out", str(out), "--root", str(project["root"]), "--min-score", "0"])

    assert code == 0
    assert "skipped broken.png" in capsys.readouterr().err
    with open(out / "skipped.csv", newline="") as f:
        assert sorted(row["file"] for row in csv.DictReader(f)) == ["broken.png", "notes.txt"]
    coco = json.loads((out / "predictions.json").read_text())
    assert coco["info"]["model"] == "shapes-detect/1"
    assert [c["name"] for c in coco["categories"]] == ["circle", "square", "triangle"]
    names = {im["file_name"]: im["id"] for im in coco["images"]}
    assert len(names) == len(project["images"]) and any(n.startswith("day2/") for n in names)
    # the results are the checkpoint's own predictions, as COCO xywh boxes
    first = project["images"][0]
    (raw,) = models.predict(project["checkpoint"], [first])
    got = [a for a in coco["annotations"] if a["image_id"] == names[first.name]]
    assert got, "the tiny model predicted nothing: nothing was compared"
    expected = np.column_stack([raw["boxes"][:, :2], raw["boxes"][:, 2:] - raw["boxes"][:, :2]])
    np.testing.assert_allclose([a["bbox"] for a in got], expected, atol=0.02)
    assert [a["category_id"] for a in got] == raw["labels"].tolist()
    overlays = sorted((out / "overlays").iterdir())
    assert len(overlays) == len(project["images"])
    assert Image.open(overlays[0]).size == Image.open(first).size


def test_predict_with_an_unknown_alias_is_a_clear_error(project, prefect_harness, tmp_path, capsys):
    code = main(["predict", "--model", "models:/shapes-detect@nope", str(tmp_path),
                 "--out", str(tmp_path / "out"), "--root", str(project["root"])])
    assert code == 1
    assert "no version of 'shapes-detect' has alias 'nope'" in capsys.readouterr().err
