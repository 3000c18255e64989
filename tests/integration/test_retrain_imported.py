"""`visiongate retrain --dataset NAME` on a dataset imported with `visiongate data import`:
the user's path from their own COCO export, with some bad items in it, to registered
models with lineage — and a data-quality gate that holds back one of them."""

import copy
import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from conftest import TINY_PARAMS, make_project  # tests/integration/conftest.py
from flows.cli import main
from visiongate.config import SynthConfig, load_params
from visiongate.datasets.prepare import tree_md5
from visiongate.datasets.synth import generate
from visiongate.tracking import tracking_uri
from visiongate.versioning import split_md5s

pytestmark = pytest.mark.integration


def test_retrain_on_an_imported_coco_dataset(tmp_path, prefect_harness):
    # the user's data: a COCO export with its own splits (here drawn by the shapes generator)
    src = tmp_path / "export"
    generate(SynthConfig(seed=3, image_size=64, splits={"train": 8, "val": 4, "test": 4}), src)
    _add_bad_items(src / "train")
    before = tree_md5(src)
    params = copy.deepcopy(TINY_PARAMS)
    params["detect"]["gate"].pop("robustness")
    params["detect"]["gate"]["max_quarantine_share"] = 0.05    # 1 of 17 images: refused
    params["segment"]["gate"]["max_quarantine_share"] = 0.10   # passes
    root = make_project(tmp_path / "project", params)

    assert main(["data", "import", "--format", "coco", str(src), "--name", "mine",
                 "--root", str(root)]) == 0
    quarantine = (root / "data/prepared/mine/quarantine.csv").read_text()
    for kind, item in (("zero_byte", "empty.png"), ("box_outside", "000000.png"),
                       ("unknown_class", "annotation id 9002")):
        assert any(kind in line and item in line for line in quarantine.splitlines()), kind
    assert main(["retrain", "--dataset", "mine", "--root", str(root)]) == 3  # detect refused
    assert tree_md5(src) == before                      # the source is never touched

    md5s = split_md5s(root, "mine")
    client = MlflowClient(tracking_uri(root, load_params(root / "params.yaml").mlflow))
    refused = client.get_model_version_by_alias("mine-detect", "challenger")
    assert refused.tags["gate.passed"] == "false" and set(refused.aliases) == {"challenger"}
    reasons = client.get_run(refused.run_id).data.tags["gate.reasons"]
    assert "quarantined 1 of 17 images (5.9%) > max 5.0%" in reasons
    for name in ("mine-detect", "mine-segment"):
        version = client.get_model_version_by_alias(name, "challenger")
        for split, md5 in md5s.items():
            assert version.tags[f"data.md5.{split}"] == md5
        run = client.get_run(version.run_id)
        assert run.data.params["data.md5.test"] == md5s["test"]
        assert run.data.metrics["data/train/images"] == 8    # the empty file left out
        assert run.data.metrics["data/quarantine_share"] == pytest.approx(1 / 17)
        logged = {f.path for f in client.list_artifacts(version.run_id, "data")}
        assert {"data/class_histogram.png", "data/box_sizes.png",
                "data/quarantine.csv"} <= logged


def _add_bad_items(split: Path) -> None:
    """A zero-byte image listed in the COCO file, a box far outside its image and an
    annotation of a category that does not exist."""
    coco = json.loads((split / "annotations.json").read_text())
    (split / "images" / "empty.png").write_bytes(b"")
    coco["images"].append({"id": 999, "file_name": "images/empty.png", "width": 64, "height": 64})
    first, second = coco["images"][0]["id"], coco["images"][1]["id"]
    coco["annotations"] += [
        {"id": 9001, "image_id": first, "category_id": 1, "bbox": [40, 40, 200, 200],
         "area": 40000, "iscrowd": 0},
        {"id": 9002, "image_id": second, "category_id": 77, "bbox": [1, 1, 10, 10],
         "area": 100, "iscrowd": 0}]
    (split / "annotations.json").write_text(json.dumps(coco))
