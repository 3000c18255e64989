"""Reading the canonical layout and exporting the YOLO layout."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from pycocotools.coco import COCO

from visiongate.config import SynthConfig
from visiongate.datasets import coco, synth

TINY = SynthConfig(seed=1, image_size=64, splits={"train": 8, "val": 3, "test": 3})


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data") / "shapes"
    synth.generate(TINY, root)
    return root


def _listing(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*"))}


def test_load_split(shapes):
    split = coco.load_split(shapes / "train")
    assert split.class_names == ("circle", "square", "triangle")
    assert len(split.images) == 8 and set(split.annotations) == set(range(1, 9))
    image = split.images[0]
    assert split.image_path(image) == shapes / "train" / "images" / "000000.png"
    assert split.mask_path(image) == shapes / "train" / "masks" / "000000.png"
    mask = coco.read_semantic_mask(split, image)
    assert mask.shape == (64, 64) and mask.dtype == np.uint8
    assert set(np.unique(mask)) - {0} == {a["category_id"] for a in split.annotations[1]}


def test_load_split_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="annotations.json"):
        coco.load_split(tmp_path)
    (tmp_path / "annotations.json").write_text("{not json")
    with pytest.raises(ValueError, match="annotations.json.*not valid JSON"):
        coco.load_split(tmp_path)
    (tmp_path / "annotations.json").write_text(json.dumps({"images": []}))
    with pytest.raises(ValueError, match="annotations.json.*annotations"):
        coco.load_split(tmp_path)


def test_read_semantic_mask_rejects_a_wrong_size(shapes):
    split = coco.load_split(shapes / "val")
    image = dict(split.images[0], width=32)
    with pytest.raises(ValueError, match="000000.png"):
        coco.read_semantic_mask(split, image)


def test_pycocotools_reads_the_annotations(shapes):
    split = coco.load_split(shapes / "test")
    api = COCO()
    api.dataset = split.coco_dict()
    api.createIndex()
    assert len(api.getImgIds()) == 3 and api.getCatIds() == [1, 2, 3]
    for ann in api.dataset["annotations"]:
        assert api.annToMask(ann).sum() == pytest.approx(ann["area"], rel=0.01)


def test_export_yolo(shapes, tmp_path):
    before = _listing(shapes)
    data_yaml = coco.export_yolo(shapes, tmp_path / "yolo")
    assert _listing(shapes) == before
    data = yaml.safe_load(data_yaml.read_text())
    assert data["path"] == str((tmp_path / "yolo").resolve())
    assert [data[s] for s in ("train", "val", "test")] == [f"images/{s}" for s in
                                                           ("train", "val", "test")]
    assert data["names"] == {0: "circle", 1: "square", 2: "triangle"}
    for name in ("train", "val", "test"):
        split = coco.load_split(shapes / name)
        for image in split.images:
            stem = Path(image["file_name"]).stem
            exported = tmp_path / "yolo" / "images" / name / f"{stem}.png"
            assert exported.read_bytes() == split.image_path(image).read_bytes()
            lines = (tmp_path / "yolo" / "labels" / name / f"{stem}.txt").read_text().splitlines()
            anns = split.annotations[image["id"]]
            assert len(lines) == len(anns)
            for line, ann in zip(lines, anns):
                cls, *box = line.split()
                assert int(cls) == ann["category_id"] - 1
                assert len(box) == 4 and all(0 <= float(v) <= 1 for v in box)
                x, y, w, h = ann["bbox"]
                assert float(box[0]) == pytest.approx((x + w / 2) / 64, abs=1e-6)


def test_export_yolo_twice_and_empty_images(tmp_path):
    root = tmp_path / "one"
    (root / "train" / "images").mkdir(parents=True)
    Image.fromarray(np.zeros((16, 24, 3), np.uint8)).save(root / "train" / "images" / "a.png")
    (root / "train" / "annotations.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "images/a.png", "width": 24, "height": 16}],
        "annotations": [], "categories": [{"id": 1, "name": "dot", "supercategory": "shape"}]}))
    for _ in range(2):  # re-export replaces the previous output
        data_yaml = coco.export_yolo(root, tmp_path / "cache")
    assert (tmp_path / "cache" / "labels" / "train" / "a.txt").read_text() == ""
    assert yaml.safe_load(data_yaml.read_text())["names"] == {0: "dot"}


def test_export_yolo_refuses_to_write_inside_the_dataset(shapes):
    with pytest.raises(ValueError, match="inside the dataset"):
        coco.export_yolo(shapes, shapes / "yolo")
