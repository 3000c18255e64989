"""`visiongate data review|exclude` and a retrain on an exclusion list: real DVC (a tmp
project, `dvc add` of the list), real MLflow (sqlite store in tmp), Prefect's harness."""

from __future__ import annotations

import copy
import hashlib
import json

import pytest
import yaml
from conftest import TINY_PARAMS, make_project  # tests/integration/conftest.py
from mlflow.tracking import MlflowClient

from flows.cli import main
from visiongate import tracking, versioning
from visiongate.config import SynthConfig, load_params
from visiongate.datasets.coco import load_split
from visiongate.datasets.prepare import tree_md5
from visiongate.datasets.synth import generate

pytestmark = pytest.mark.integration
HEADER = "split,file,annotation,kind,score,detail\n"


def _uri(root):
    return tracking.tracking_uri(root, load_params(root / "params.yaml").mlflow)


def _log_suspects(root, model: str, text: str) -> str:
    """A finished run tagged model_name=<model> with `text` as suspects/suspects.csv."""
    params = load_params(root / "params.yaml")
    uri = _uri(root)
    run_id = tracking.start_run(uri, tracking.ensure_experiment(uri, root, params.mlflow), model,
                                {}, {"model_name": model})
    path = root / "suspects.csv"
    path.write_text(text)
    tracking.log_artifact(uri, run_id, path, "suspects")
    tracking.end_run(uri, run_id)
    path.unlink()
    return run_id


def _object(root, dataset="shapes", split="train"):
    """(file_name, [annotation ids]) of a prepared image with at least two objects."""
    s = load_split(root / "data" / "prepared" / dataset / split)
    return next((i["file_name"], [a["id"] for a in s.annotations[i["id"]]])
                for i in s.images if len(s.annotations[i["id"]]) >= 2)


def _md5(path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_review_prints_the_suspects_of_the_latest_run_or_says_there_are_none(tmp_path, capsys):
    root = tmp_path / "project"
    root.mkdir()
    (root / "params.yaml").write_text(yaml.safe_dump(TINY_PARAMS))
    assert main(["data", "review", "shapes", "--root", str(root)]) == 1
    err = capsys.readouterr().err
    assert "no retrain run of shapes-detect, shapes-segment has logged suspects/suspects.csv " \
           "yet: run `visiongate retrain --dataset shapes` first" in err

    run_id = _log_suspects(root, "shapes-detect", HEADER
                           + "train,images/000003.png,12,swapped_class,0.40,square? circle\n"
                           + "val,images/000001.png,,missing_box,0.02,\"object, no box\"\n"
                           + "train,images/000004.png,7,badly_placed,0.61,IoU 0.3\n")
    assert main(["data", "review", "shapes", "--top", "2", "--root", str(root)]) == 0
    out = capsys.readouterr().out
    assert f"shapes-detect — run {run_id}: 3 labels ranked by quality, 1 below 0.1" in out
    assert "shapes-segment: no run has logged suspects/suspects.csv yet" in out
    lines = out.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("#"))
    assert lines[first + 1].split()[:4] == ["1", "val/images/000001.png", "missing_box", "0.020"]
    assert lines[first + 2].split()[:4] == ["2", "train/images/000003.png#12", "swapped_class",
                                            "0.400"]
    assert lines[first + 1].index("missing_box") == lines[first + 2].index("swapped_class")
    assert "badly_placed" not in out                                     # --top 2
    assert f"visiongate data exclude shapes --run {run_id} --top 2 --root {root}" in out

    assert main(["data", "review", "shapes", "--task", "segment", "--root", str(root)]) == 1
    assert "no retrain run of shapes-segment" in capsys.readouterr().err
    assert main(["data", "review", "shapes", "--run", "0" * 32, "--root", str(root)]) == 1
    assert "no MLflow run" in capsys.readouterr().err
    other = _log_suspects(root, "pets-detect", HEADER)
    assert main(["data", "review", "shapes", "--run", other, "--root", str(root)]) == 1
    assert "not of dataset 'shapes'" in capsys.readouterr().err

    _log_suspects(root, "shapes-detect", HEADER + "train,../../etc/passwd,,missing_box,0.1,x\n")
    assert main(["data", "review", "shapes", "--root", str(root)]) == 1  # the newest: hostile
    assert "suspects.csv line 2: file '../../etc/passwd'" in capsys.readouterr().err


def test_exclude_appends_dvc_tracks_lists_clears_and_refuses_hostile_items(tiny_project,
                                                                           capsys):
    root = tiny_project
    versioning.reproduce(root, "shapes")
    prepared_before = tree_md5(root / "data" / "prepared")
    listed = root / "data" / "exclude" / "shapes.csv"
    file, ids = _object(root)
    item = f"train/{file}#{ids[0]}"
    exclude = ["data", "exclude", "shapes", "--root", str(root)]
    assert main([*exclude, "--item", item, "--reason", "a square, not a circle"]) == 0
    assert main([*exclude, "--item", "val/images/000001.png", "--reason", "blurry"]) == 0
    assert main([*exclude, "--item", item, "--reason", "again"]) == 0      # deduped
    assert listed.read_text().splitlines() == [
        "split,file,annotation,reason", f'train,{file},{ids[0]},"a square, not a circle"',
        "val,images/000001.png,,blurry"]
    assert versioning.tracked_md5(root, "data/exclude/shapes.csv") == _md5(listed)
    capsys.readouterr()
    assert main([*exclude, "--list"]) == 0
    out = capsys.readouterr().out
    assert "2 excluded item(s)" in out and item in out and _md5(listed) in out

    assert main(["data", "validate", "shapes", "--root", str(root)]) == 0
    assert "2 item(s) excluded from training by data/exclude/shapes.csv" in \
        capsys.readouterr().out

    before = listed.read_bytes()
    for args, message in [
            (["--item", "../x", "--reason", "r"], "split '..': expected train or val"),
            (["--item", "train/../../data/raw/x.png", "--reason", "r"], "'..'"),
            (["--item", "train//etc/passwd", "--reason", "r"], "an absolute path"),
            (["--item", "test/images/000000.png", "--reason", "r"],
             "the test split is the pinned yardstick"),
            (["--item", "train/images/999999.png", "--reason", "r"], "no such image"),
            (["--item", f"train/{file}#99999", "--reason", "r"], "no annotation 99999"),
            (["--item", f"train/{file}"], "--item needs --reason"),
            (["--clear", "train/images/999999.png"], "is not in the exclusion list"),
            (["--latest", "--task", "detect"], "need --top")]:
        assert main([*exclude, *args]) == 1, args
        assert message in capsys.readouterr().err, args
    assert listed.read_bytes() == before                     # nothing written by a refusal

    suspects = HEADER + (f"train,{file},{ids[1]},swapped_class,0.1,x\n"
                         "val,images/000002.png,,wrong_label,0.5,y\n")
    run_id = _log_suspects(root, "shapes-detect", suspects)
    assert main([*exclude, "--run", run_id, "--top", "1"]) == 0
    assert f'train,{file},{ids[1]},"swapped_class (score 0.100, run {run_id})"' in \
        listed.read_text()
    assert main([*exclude, "--clear", item]) == 0
    assert item not in listed.read_text()
    assert versioning.tracked_md5(root, "data/exclude/shapes.csv") == _md5(listed)
    assert tree_md5(root / "data" / "prepared") == prepared_before    # the data never edited


def test_an_exclusion_retrains_on_a_view_without_it_and_leaves_the_data_as_it_was(
        tmp_path, prefect_harness, monkeypatch):
    from flows.retrain import retrain
    from visiongate import lineage

    # "nothing changed" compares the code too: held fixed, so that files edited in this
    # checkout while the test runs cannot make a retrain of the same inputs train again
    monkeypatch.setattr(lineage, "code_hash", lambda: "0123456789abcdef")

    src = tmp_path / "export"
    generate(SynthConfig(seed=3, image_size=64, splits={"train": 8, "val": 4, "test": 4}), src)
    params = copy.deepcopy(TINY_PARAMS)
    params["detect"]["enabled"] = False                     # one U-Net: the cheapest model
    params["segment"]["gate"]["max_quarantine_share"] = 0.0
    root = make_project(tmp_path / "project", params)
    assert main(["data", "import", "--format", "coco", str(src), "--name", "mine",
                 "--root", str(root)]) == 0
    data_before = {d: tree_md5(root / "data" / d) for d in ("raw", "prepared")}
    (first,) = retrain(str(root), dataset="mine")
    assert first.status == "promoted"

    file, ids = _object(root, "mine")
    assert main(["data", "exclude", "mine", "--item", f"train/{file}#{ids[0]}", "--reason",
                 "a square labelled circle", "--root", str(root)]) == 0
    listed = root / "data" / "exclude" / "mine.csv"
    (second,) = retrain(str(root), dataset="mine")
    assert second.status == "promoted" and second.version != first.version  # it trained

    client = MlflowClient(_uri(root))
    tags = {o.version: client.get_model_version("mine-segment", o.version).tags
            for o in (first, second)}
    assert "data.md5.exclude" not in tags[first.version]
    assert tags[second.version]["data.md5.exclude"] == _md5(listed) == \
        versioning.tracked_md5(root, "data/exclude/mine.csv")
    for key in ("data.md5.train", "data.md5.val", "data.md5.test"):     # the same pinned data
        assert tags[second.version][key] == tags[first.version][key]
    run = client.get_run(second.run_id).data
    assert run.metrics["data/quarantine_share"] == 0.0  # an exclusion is no quarantined image
    history = [m for key in run.metrics for m in client.get_metric_history(second.run_id, key)]
    assert any(m.step == 1 for m in history), "trained no epoch: resumed the first model"
    report = open(client.download_artifacts(second.run_id, "data/quarantine.csv")).read()
    assert f"train/{file},excluded_suspect,annotation {ids[0]}" in report
    (view,) = (root / ".cache" / "views").glob("mine-image-excl-*")      # masks: image dropped
    trained = [i["file_name"] for i in json.loads((view / "train/annotations.json").read_text())
               ["images"]]
    assert file not in trained and len(trained) == len(load_split(
        root / "data/prepared/mine/train").images) - 1

    (third,) = retrain(str(root), dataset="mine")              # same list: nothing changed
    assert third.status == "unchanged" and third.version == second.version
    assert main(["data", "exclude", "mine", "--clear", f"train/{file}#{ids[0]}",
                 "--root", str(root)]) == 0
    (fourth,) = retrain(str(root), dataset="mine")              # empty list = no list = v1
    assert fourth.status == "unchanged" and fourth.version == first.version
    assert {d: tree_md5(root / "data" / d) for d in ("raw", "prepared")} == data_before
