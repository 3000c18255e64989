"""Classification through the whole chain, as a user runs it: an ImageFolder dataset and a
multi-label CSV dataset (each with bad items) imported, retrained (one epoch), gated,
promoted, loaded by alias as the pyfunc that `visiongate serve` runs, and predicted in
batch — real DVC, MLflow sqlite store and Prefect harness."""

import copy
import csv
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import TINY_PARAMS, make_project  # tests/integration/conftest.py
from mlflow.tracking import MlflowClient
from PIL import Image

from flows.cli import main
from visiongate import models, registry, serving
from visiongate.config import SynthConfig, load_params
from visiongate.datasets.coco import load_split
from visiongate.datasets.image_labels import labels_of
from visiongate.datasets.prepare import tree_md5
from visiongate.datasets.synth import generate
from visiongate.tracking import tracking_uri

pytestmark = pytest.mark.integration

SPLIT_SIZES = {"train": 12, "val": 6, "test": 6}


def _params(family: str, multi_label: bool) -> dict:
    params = copy.deepcopy(TINY_PARAMS)
    params["detect"]["enabled"] = params["segment"]["enabled"] = False
    metric = "map" if multi_label else "accuracy"
    params["classify"] = {
        "enabled": True, "family": family, "multi_label": multi_label, "epochs": 1,
        "imgsz": 32, "batch": 4, "min_score": 0.9,
        "gate": {"floors": {metric: 0.0}, "max_drop": {metric: 1.0},
                 "robustness": {"metric": metric, "corruptions": {"blur": 1},
                                "max_relative_drop": 1.0}}}
    return params


def _shapes(tmp_path: Path) -> tuple[Path, list[tuple[str, Path, list[str]]]]:
    """Synthetic shapes and, per image, (split, path, classes present, largest first)."""
    data = tmp_path / "shapes"
    generate(SynthConfig(seed=3, image_size=48, splits=SPLIT_SIZES), data)
    items = []
    for split in SPLIT_SIZES:
        s = load_split(data / split)
        for image in s.images:
            largest = labels_of(s, image, multi_label=False)
            present = labels_of(s, image, multi_label=True)
            names = [s.class_names[k - 1] for k in largest + [k for k in present
                                                              if k not in largest]]
            items.append((split, s.image_path(image), names))
    return data, items


def _registered(root: Path, name: str):
    client = MlflowClient(tracking_uri(root, load_params(root / "params.yaml").mlflow))
    return client, client.get_model_version_by_alias(name, "champion")


def test_imagefolder_dataset_to_a_served_champion(tmp_path, prefect_harness, monkeypatch):
    _, items = _shapes(tmp_path)
    src = tmp_path / "folders"
    for split, path, names in items:
        (src / split / names[0]).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, src / split / names[0] / path.name)
    (src / "train" / "circle" / "notes.png").write_text("not an image")
    first = next(p for s, p, _ in items if s == "train")
    other = next(n for n in ("circle", "square", "triangle")
                 if not (src / "train" / n / first.name).exists())
    shutil.copy(first, src / "train" / other / first.name)   # same bytes, two classes
    before = tree_md5(src)
    root = make_project(tmp_path / "project", _params("mobilenet_v3_small", False))

    assert main(["data", "import", "--format", "folders", str(src), "--name", "shapes-folders",
                 "--root", str(root)]) == 0
    quarantine = (root / "data/prepared/shapes-folders/quarantine.csv").read_text()
    assert "not_an_image" in quarantine and "conflicting_labels" in quarantine
    assert main(["retrain", "--dataset", "shapes-folders", "--root", str(root)]) == 0
    assert tree_md5(src) == before                       # the source is never touched

    client, champion = _registered(root, "shapes-folders-classify")
    run = client.get_run(champion.run_id)
    assert 0 <= run.data.metrics["test/accuracy"] <= 1
    assert "test/ece" in run.data.metrics and "robust/blur/accuracy" in run.data.metrics
    plots = {Path(f.path).name for f in client.list_artifacts(champion.run_id, "plots")}
    assert {"confusion_matrix.png", "reliability.png", "confident_mistakes.png"} <= plots
    assert "accuracy" in _report(client, champion.run_id)

    # a second candidate is gated against the champion on the same pinned split
    assert main(["retrain", "--dataset", "shapes-folders", "--root", str(root), "--force"]) == 0
    _, second = _registered(root, "shapes-folders-classify")
    assert int(second.version) == int(champion.version) + 1
    assert f"v{champion.version}" in _report(client, second.run_id)   # compared with it

    test_images = [p for s, p, _ in items if s == "test"]
    model = _pyfunc(root, "models:/shapes-folders-classify@champion", monkeypatch)
    answers = model.predict(pd.DataFrame({"image": [serving.encode_image(p)
                                                    for p in test_images]}))
    for answer in answers:  # classify.min_score 0.9 (_params): top-1 only when that sure
        assert len(answer["top_k"]) == 3                       # min(5, K classes)
        assert abs(sum(x["score"] for x in answer["top_k"]) - 1) < 1e-3
        sure = answer["top_k"][0]["score"] >= 0.9
        assert answer["labels"] == (answer["top_k"][:1] if sure else [])

    # switching to multi-label: the single-label champion's metrics are not comparable,
    # so the gate refuses automatic promotion and says why; the champion stays
    params = load_params(root / "params.yaml").model_dump(mode="json")
    params["classify"]["multi_label"] = True
    params["classify"]["gate"] = {"floors": {"map": 0.0}}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    assert main(["retrain", "--dataset", "shapes-folders", "--root", str(root)]) == 3
    _, still = _registered(root, "shapes-folders-classify")
    assert still.version == second.version
    refused = client.get_model_version_by_alias("shapes-folders-classify", "challenger")
    assert "a classify model on the image view and the candidate a multilabel one" in \
        _report(client, refused.run_id)

    out = tmp_path / "predicted"
    images_dir = test_images[0].parent
    assert main(["predict", "--model", "models:/shapes-folders-classify@champion",
                 str(images_dir), "--out", str(out), "--root", str(root)]) == 0
    rows = list(csv.DictReader(open(out / "predictions.csv")))
    assert len(rows) == len(list(images_dir.iterdir()))
    assert all(r["top_k"].count(":") == 3 for r in rows)


def test_multilabel_csv_dataset_to_a_champion_with_thresholds(tmp_path, prefect_harness,
                                                              monkeypatch):
    _, items = _shapes(tmp_path)
    src = tmp_path / "csv"
    (src / "images").mkdir(parents=True)
    rows = [("image", "labels", "split")]
    for split, path, names in items:
        shutil.copy(path, src / "images" / f"{split}-{path.name}")
        rows.append((f"images/{split}-{path.name}", ";".join(sorted(names)), split))
    Image.new("RGB", (48, 48), (200, 30, 30)).save(src / "images" / "extra.png")
    (src / "classes.txt").write_text("circle\nsquare\ntriangle\n")  # the class list
    rows += [("images/extra.png", "hexagon", "train"),              # unknown class
             ("../outside.png", "circle", "train")]                 # outside the source
    (tmp_path / "outside.png").write_bytes(items[0][1].read_bytes())
    with open(src / "labels.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    root = make_project(tmp_path / "project", _params("resnet18", True))

    assert main(["data", "import", "--format", "csv", str(src), "--name", "shapes-csv",
                 "--root", str(root)]) == 0
    quarantine = (root / "data/prepared/shapes-csv/quarantine.csv").read_text()
    assert "unknown_class" in quarantine and "outside_source" in quarantine
    assert main(["retrain", "--dataset", "shapes-csv", "--root", str(root)]) == 0

    client, champion = _registered(root, "shapes-csv-classify")
    metrics = client.get_run(champion.run_id).data.metrics
    assert 0 <= metrics["test/map"] <= 1 and "test/hamming_loss" in metrics
    uri = tracking_uri(root, load_params(root / "params.yaml").mlflow)
    version = registry.resolve(uri, "models:/shapes-csv-classify@champion")
    meta = models.CheckpointMeta.read(registry.checkout(uri, version, tmp_path / "co"))
    assert meta.task == "multilabel" and len(meta.thresholds) == 3
    assert all(0 <= t <= 1 for t in meta.thresholds)

    model = _pyfunc(root, "models:/shapes-csv-classify@champion", monkeypatch)
    answer = model.predict(pd.DataFrame({"image": [serving.encode_image(items[0][1])]}))[0]
    # exactly the classes at or above their own thresholds (not a request default's)
    above = [x for x in answer["top_k"]
             if x["score"] >= meta.thresholds[meta.class_names.index(x["class_name"])]]
    assert answer["labels"] == above


def _pyfunc(root: Path, model_uri: str, monkeypatch):
    """The pyfunc by alias, as a client loads it: the store from the environment (test-
    scoped, so no MLflow global outlives the test)."""
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI",
                       tracking_uri(root, load_params(root / "params.yaml").mlflow))
    return mlflow.pyfunc.load_model(model_uri)


def _report(client: MlflowClient, run_id: str) -> str:
    path = client.download_artifacts(run_id, "gate_report.md")
    return Path(path).read_text()


def test_a_detector_on_an_image_label_dataset_is_a_clear_error(tmp_path, prefect_harness,
                                                               capsys):
    _, items = _shapes(tmp_path)
    src = tmp_path / "folders"
    for split, path, names in items:
        (src / split / names[0]).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, src / split / names[0] / path.name)
    params = _params("mobilenet_v3_small", False)
    params["detect"]["enabled"] = True
    root = make_project(tmp_path / "project", params)
    assert main(["data", "import", "--format", "folders", str(src), "--name", "labels-only",
                 "--root", str(root)]) == 0
    capsys.readouterr()
    assert main(["retrain", "--dataset", "labels-only", "--root", str(root)]) == 1
    err = capsys.readouterr().err
    assert "image labels only, no boxes" in err and "detect.enabled: false" in err
    assert err.strip().splitlines()[-1].startswith("visiongate: error: dataset 'labels-only'")
    assert json.loads((root / "data/prepared/labels-only/info.json").read_text())["image_labels"]


def test_a_classifier_on_the_objects_of_a_detection_dataset(tmp_path, prefect_harness,
                                                            monkeypatch, capsys):
    """The demo's classifier: `classify.view: crops` on the synthetic shapes. It is scored
    on the crops of the pinned test images (the CLI and the champion check agree), the
    prepared dataset is only read, and a switch of view is never auto-promoted."""
    params = _params("resnet18", False)
    params["classify"]["view"] = "crops"
    root = make_project(tmp_path / "project", params)
    assert main(["retrain", "--root", str(root)]) == 0
    prepared = root / "data/prepared/shapes"
    before = tree_md5(prepared)

    client, champion = _registered(root, "shapes-classify")
    metrics = client.get_run(champion.run_id).data.metrics
    test = load_split(prepared / "test")
    objects = sum(len(anns) for anns in test.annotations.values())
    assert len(test.images) < metrics["test/images_scored"] <= objects   # one item per object
    capsys.readouterr()
    assert main(["evaluate", "--model", "models:/shapes-classify@champion", "--root",
                 str(root)]) == 0
    scored = json.loads(capsys.readouterr().out)["metrics"]
    assert scored["accuracy"] == pytest.approx(metrics["test/accuracy"])
    assert scored["images_scored"] == metrics["test/images_scored"]

    model = _pyfunc(root, "models:/shapes-classify@champion", monkeypatch)
    crop = next((root / ".cache/views").glob("shapes-crops-*/test/images/*.png"))
    answer = model.predict(pd.DataFrame({"image": [serving.encode_image(crop)]}))[0]
    assert {x["class_name"] for x in answer["top_k"]} == {"circle", "square", "triangle"}

    params["classify"]["view"] = "image"              # whole images: not comparable scores
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    assert main(["retrain", "--root", str(root)]) == 3
    _, still = _registered(root, "shapes-classify")
    assert still.version == champion.version
    refused = client.get_model_version_by_alias("shapes-classify", "challenger")
    assert "on the crops view" in _report(client, refused.run_id)
    assert tree_md5(prepared) == before
