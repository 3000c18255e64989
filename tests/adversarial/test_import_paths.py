"""Imports read only their source (#20): readers and the raw copy, without DVC (fast).

Every test checks its outcome (a quarantine kind, a refusal), that the "outside" folder
was neither read (access times, where the file system records them) nor written, that
no copy of an outside file reached the output, and that the source's bytes and modes
are unchanged. `test_import_cli.py` runs the same hostile sources through the real
`visiongate data import`.

Decision on links: a symbolic link (file or folder) is never followed; each one found is
a `symlink` quarantine line, a symlinked folder is never entered (loops cannot grow
anything), and the raw copy holds regular files only.
"""

from __future__ import annotations

import json
import os
import time
from contextlib import contextmanager
from types import SimpleNamespace

import import_sandbox as sandbox
import pytest

from flows.data_cli import _params_file, dataset_name
from visiongate.config import ValidationConfig
from visiongate.datasets import rawcopy
from visiongate.datasets.prepare import prepare, tree_md5
from visiongate.datasets.validate import read_quarantine
from visiongate.errors import ConfigError
from visiongate.batch_predict import overlay_names
from visiongate.versioning import _produces

CFG = ValidationConfig(max_quarantine_share=0.9, clip_tolerance=0.02)


@pytest.fixture
def outside(tmp_path):
    return sandbox.make_outside(tmp_path / "outside")


@contextmanager
def untouched(tmp_path, src, outside):
    """The source keeps its bytes and modes; outside is neither written nor read."""
    before = tree_md5(src), sandbox.modes(src), sandbox.modes(outside), sandbox.atimes(outside)
    yield
    assert (tree_md5(src), sandbox.modes(src)) == before[:2], "the source changed"
    assert sandbox.modes(outside) == before[2], "something was written outside"
    if sandbox.reads_are_recorded(tmp_path):
        assert sandbox.atimes(outside) == before[3], "a file outside the source was read"


def _kinds(out) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for issue in read_quarantine(out / "quarantine.csv"):
        found.setdefault(issue.kind, []).append(issue.detail)
    return found


def test_coco_file_name_outside_the_source_is_quarantined(tmp_path, outside):
    src = sandbox.writers.make_coco(tmp_path / "src", n=4)
    ann = src / "train" / "instances_train.json"
    coco = json.loads(ann.read_text())
    hostile = ["../../outside/secret.png", str(outside / "secret.png"),
               "images/../../../outside/folder/secret.png"]
    coco["images"] += [{"id": 100 + k, "file_name": name, "width": 64, "height": 48}
                       for k, name in enumerate(hostile)]
    ann.write_text(json.dumps(coco))
    # at the root, the old lookup also tried the root's parent: tmp/outside/secret.png
    (src / "root.json").write_text(json.dumps({**coco, "annotations": [], "images": [
        {"id": 1, "file_name": "outside/secret.png", "width": 64, "height": 48}]}))
    with untouched(tmp_path, src, outside):
        info = prepare("coco", src, tmp_path / "out", cfg=CFG)
    kinds = _kinds(tmp_path / "out")
    assert len(kinds["outside_source"]) == 3
    assert [d for d in kinds["missing_image"] if "outside/secret.png" in d]
    assert sum(info["images"].values()) == 4
    assert sandbox.copies_of_outside(tmp_path / "out") == []


def test_voc_filename_outside_the_source_is_quarantined(tmp_path, outside):
    src = sandbox.writers.make_voc(tmp_path / "src", n=4)
    for k, name in enumerate(["../../../outside/secret.png", str(outside / "secret.png")]):
        (src / "VOC" / "Annotations" / f"evil{k}.xml").write_text(sandbox.writers.voc_xml(
            name, [("cat", [8.0, 6.0, 20.0, 12.0])]))
    with untouched(tmp_path, src, outside):
        info = prepare("voc", src, tmp_path / "out", cfg=CFG)
    assert len(_kinds(tmp_path / "out")["outside_source"]) == 2
    assert sum(info["images"].values()) == 4
    assert sandbox.copies_of_outside(tmp_path / "out") == []


def test_symlinks_are_quarantined_and_never_followed(tmp_path, outside):
    src = sandbox.writers.make_yolo(tmp_path / "src", n=4)
    links = sandbox.add_links(src, outside)
    label = src / "labels" / "train" / "train0.txt"
    label.unlink()
    label.symlink_to(outside / "secret.txt")  # a label read through a link: never
    masks = sandbox.writers.make_masks(tmp_path / "masks", n=3)
    (masks / "extra" / "label").mkdir(parents=True)
    (masks / "extra" / "image").symlink_to(outside / "folder", target_is_directory=True)
    start = time.perf_counter()
    with untouched(tmp_path, src, outside), untouched(tmp_path, masks, outside):
        prepare("yolo", src, tmp_path / "out", cfg=CFG)
        prepare("masks", masks, tmp_path / "out-masks", cfg=CFG)
    assert time.perf_counter() - start < 30, "link loops grew the walk"
    lines = read_quarantine(tmp_path / "out" / "quarantine.csv")
    assert sorted(i.file for i in lines if i.kind == "symlink") == sorted(
        [*links, "labels/train/train0.txt"])
    assert any(i.file == "images/train/train0.png" and i.kind == "missing_label" for i in lines)
    linked = str(outside / "folder")
    assert _kinds(tmp_path / "out-masks")["symlink"] == [f"symbolic link to {linked!r}: not followed"]
    for out in ("out", "out-masks"):
        assert sandbox.copies_of_outside(tmp_path / out) == []


def test_raw_copy_holds_regular_files_only_with_their_modes(tmp_path, outside):
    src = sandbox.writers.make_coco(tmp_path / "src", n=4)
    links = sandbox.add_links(src / "train", outside)
    (src / "train" / "images" / "train1.png").chmod(0o600)
    (src / "train" / "private").mkdir(mode=0o700)
    os.mkfifo(src / "train" / "images" / "pipe.png")  # opening it would block forever
    with untouched(tmp_path, src, outside):
        tmp, skipped = rawcopy.copy_regular(src, tmp_path / "data" / "raw")
        raw = tmp_path / "data" / "raw" / "hostile"
        assert rawcopy.swap_in(tmp, raw) is None
        prepare("coco", raw, tmp_path / "out", cfg=CFG)
    assert sorted((i.file, i.kind) for i in skipped) == sorted(
        [(f"train/{rel}", "symlink") for rel in links] + [("train/images/pipe.png",
                                                           "special_file")])
    assert all(p.is_dir() or p.is_file() for p in sandbox.entries(raw))
    assert not any(p.is_symlink() for p in sandbox.entries(raw))
    assert (raw / "train" / "images" / "train1.png").stat().st_mode & 0o777 == 0o600
    assert (raw / "train" / "private").stat().st_mode & 0o777 == 0o700
    assert {(i.file, i.kind) for i in skipped} <= {
        (i.file, i.kind) for i in read_quarantine(tmp_path / "out" / "quarantine.csv")}
    assert rawcopy.matches(src, raw)  # a re-import of the same source keeps this copy
    assert sandbox.copies_of_outside(tmp_path) == sandbox.copies_of_outside(outside)
    (src / "train" / "images" / "train2.png").write_bytes(b"changed")
    assert not rawcopy.matches(src, raw)


def test_a_copy_failing_halfway_leaves_nothing(tmp_path, outside, monkeypatch):
    src = sandbox.writers.make_coco(tmp_path / "src", n=4)
    sandbox.add_links(src, outside)  # a dangling link among them: skipped, never copied
    copied = []

    def failing_copy(source, target, **kwargs):
        if len(copied) == 2:
            raise OSError(28, "No space left on device")
        copied.append(source)
        return rawcopy.shutil.copyfile(source, target)

    monkeypatch.setattr(rawcopy.shutil, "copy2", failing_copy)
    with untouched(tmp_path, src, outside), pytest.raises(OSError, match="No space"):
        rawcopy.copy_regular(src, tmp_path / "data" / "raw")
    assert list((tmp_path / "data" / "raw").iterdir()) == []


def test_names_and_params_are_refused_unless_plain(tmp_path):
    for name in ("x\n", "../../elsewhere", "/tmp/x", "-x", "a b", "x;true"):
        with pytest.raises(ConfigError, match="not a path"):
            dataset_name(name)
    assert dataset_name("my_data-2") == "my_data-2"
    for params in ("params.yaml; touch PWNED; true", "/etc/passwd", "../params.yaml",
                   "-x.yaml", "a/../../b.yaml", "$(id).yaml", "p.yaml\n"):
        with pytest.raises(ConfigError, match="--params"):
            _params_file(tmp_path, params)
    assert _params_file(tmp_path, "conf/params.v2.yaml") == "conf/params.v2.yaml"
    assert list(tmp_path.iterdir()) == []


def _stage(*paths: str) -> SimpleNamespace:
    return SimpleNamespace(outs=[SimpleNamespace(def_path=p) for p in paths])


def test_stages_match_the_dataset_folder_exactly():
    stage = _stage
    assert _produces(stage("data/prepared/yolo/train"), "yolo")
    assert not _produces(stage("data/prepared/yolo2/train", "data/prepared/yolov8"), "yolo")


def test_overlays_of_a_nested_and_a_flat_image_do_not_collide():
    names = overlay_names(["sub/a.png", "sub__a.png", "Sub__A.png", "sub/b.jpg"])
    assert len({n.lower() for n in names.values()}) == 4
    assert names["sub/a.png"] == "sub__a.png" and names["sub/b.jpg"] == "sub__b.jpg.png"
