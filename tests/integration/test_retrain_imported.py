"""`visiongate retrain --dataset NAME` on a dataset imported with `visiongate data import`:
the user's path from their own COCO export to registered models with lineage."""

import copy

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
    before = tree_md5(src)
    params = copy.deepcopy(TINY_PARAMS)
    params["detect"]["gate"].pop("robustness")
    root = make_project(tmp_path / "project", params)

    assert main(["data", "import", "--format", "coco", str(src), "--name", "mine",
                 "--root", str(root)]) == 0
    assert main(["retrain", "--dataset", "mine", "--root", str(root)]) == 0
    assert tree_md5(src) == before                      # the source is never touched

    md5s = split_md5s(root, "mine")
    client = MlflowClient(tracking_uri(root, load_params(root / "params.yaml").mlflow))
    for name in ("mine-detect", "mine-segment"):
        version = client.get_model_version_by_alias(name, "champion")
        for split, md5 in md5s.items():
            assert version.tags[f"data.md5.{split}"] == md5
        run = client.get_run(version.run_id)
        assert run.data.params["data.md5.test"] == md5s["test"]
        assert run.data.metrics["data/train/images"] == 8
        assert run.data.metrics["data/quarantine_share"] == 0
        logged = {f.path for f in client.list_artifacts(version.run_id, "data")}
        assert {"data/class_histogram.png", "data/box_sizes.png",
                "data/quarantine.csv"} <= logged
