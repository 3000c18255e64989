"""Shared by the adversarial tests: one tiny real YOLO for the session, registered once."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def tiny_yolo(tmp_path_factory) -> dict:
    """A real YOLOv8n checkpoint (1 epoch, 64 px) and the data it was trained on."""
    from hostile_models import TINY

    from visiongate import models
    from visiongate.config import DetectConfig, SynthConfig
    from visiongate.datasets import synth
    from visiongate.datasets.coco import load_split

    root = tmp_path_factory.mktemp("tiny-yolo")
    synth.generate(SynthConfig(seed=3, image_size=64, splits={"train": 8, "val": 4, "test": 4}),
                   root / "data")
    checkpoint = models.train(DetectConfig(**TINY), root / "data", root / "work")
    split = load_split(root / "data" / "test")
    return {"data": root / "data", "checkpoint": checkpoint,
            "images": [split.image_path(im) for im in split.images]}


@pytest.fixture(scope="session")
def yolo_store(tiny_yolo, tmp_path_factory) -> dict:
    """An MLflow sqlite store in tmp holding tiny_yolo as shapes-detect v1, logged as the
    flow logs it; `artifacts` is the version's model folder in the store, on disk."""
    from hostile_models import NAME
    from mlflow.tracking import MlflowClient

    from visiongate import registry, tracking
    from visiongate.config import MlflowConfig

    root = tmp_path_factory.mktemp("store")
    uri = tracking.tracking_uri(root, MlflowConfig())
    run_id = tracking.start_run(uri, tracking.ensure_experiment(uri, root, MlflowConfig()),
                                NAME, {}, {})
    model_uri = tracking.log_model(uri, run_id, tiny_yolo["checkpoint"], tiny_yolo["images"][0])
    version = registry.register(uri, NAME, model_uri, {})
    source = MlflowClient(uri).get_model_version_download_uri(NAME, version.version)
    artifacts = Path(url2pathname(urlparse(source).path))
    assert (artifacts / "MLmodel").is_file(), source
    return {"uri": uri, "version": version, "artifacts": artifacts}


@pytest.fixture
def marker(tmp_path) -> Path:
    """Where a payload writes when it runs; every test asserts it never appears."""
    return tmp_path / "PWNED"


@pytest.fixture
def nothing_written_outside(tmp_path, monkeypatch):
    """Runs the test in tmp_path; the repository gains no top-level entry."""
    before = {p.name for p in REPO.iterdir()}
    monkeypatch.chdir(tmp_path)
    yield
    assert {p.name for p in REPO.iterdir()} - before - {".pytest_cache"} == set()
