"""The synthetic shapes generator: determinism, content, and mask/annotation consistency."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pydantic
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from visiongate.config import SynthConfig
from visiongate.datasets import synth

TINY = SynthConfig(seed=3, image_size=64, splits={"train": 40, "val": 6, "test": 6},
                   classes=("circle", "square", "triangle", "ellipse", "star"),
                   objects_per_image=(1, 4), object_size=(0.1, 0.6))


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("shapes")
    synth.generate(TINY, root)
    return root


def _coco(root: Path, split: str) -> dict:
    return json.loads((root / split / "annotations.json").read_text())


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _ann_mask(ann: dict, size: int) -> np.ndarray:
    rle = mask_utils.merge(mask_utils.frPyObjects(ann["segmentation"], size, size))
    return mask_utils.decode(rle).astype(bool)


def test_shapes_registry_and_class_validation():
    assert {"circle", "square", "triangle", "ellipse", "star"} <= set(synth.SHAPES)
    with pytest.raises(pydantic.ValidationError, match="unknown shape"):
        SynthConfig(classes=("circle", "hexagon"))


def test_generation_is_byte_identical(tmp_path):
    cfg = TINY.model_copy(update={"splits": {"train": 5, "val": 2, "test": 2}})
    synth.generate(cfg, tmp_path / "a")
    synth.generate(cfg, tmp_path / "b")
    first, second = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert len(first) == 3 * 1 + 2 * (5 + 2 + 2)
    assert first == second


def test_other_seed_gives_other_images(tmp_path):
    cfg = TINY.model_copy(update={"splits": {"train": 2}})
    synth.generate(cfg, tmp_path / "a")
    synth.generate(cfg.model_copy(update={"seed": 4}), tmp_path / "b")
    assert _files(tmp_path / "a") != _files(tmp_path / "b")


def test_regenerating_replaces_a_split(tmp_path):
    synth.generate(TINY.model_copy(update={"splits": {"train": 4}}), tmp_path)
    counts = synth.generate(TINY.model_copy(update={"splits": {"train": 2}}), tmp_path)
    assert counts == {"train": 2}
    assert len(list((tmp_path / "train" / "images").iterdir())) == 2


def test_counts_files_and_formats(shapes):
    for split, count in TINY.splits.items():
        coco = _coco(shapes, split)
        assert [im["id"] for im in coco["images"]] == list(range(1, count + 1))
        assert len(list((shapes / split / "images").glob("*.png"))) == count
        ann_ids = [a["id"] for a in coco["annotations"]]
        assert ann_ids == list(range(1, len(ann_ids) + 1))
        assert [c["id"] for c in coco["categories"]] == [1, 2, 3, 4, 5]
        assert [c["name"] for c in coco["categories"]] == list(TINY.classes)
    first = _coco(shapes, "train")["images"][0]
    assert first["file_name"] == "images/000000.png"
    with Image.open(shapes / "train" / first["file_name"]) as im:
        assert (im.mode, im.size) == ("RGB", (64, 64))
    with Image.open(shapes / "train" / "masks" / "000000.png") as mask:
        assert (mask.mode, mask.size) == ("L", (64, 64))


def test_every_class_and_both_small_and_large_objects(shapes):
    anns = [a for split in TINY.splits for a in _coco(shapes, split)["annotations"]]
    assert {a["category_id"] for a in anns} == {1, 2, 3, 4, 5}
    fractions = np.array([a["area"] for a in anns]) / 64**2
    assert (fractions < 0.10).any() and (fractions > 0.20).any()
    per_image = np.bincount([a["image_id"] for a in _coco(shapes, "train")["annotations"]])[1:]
    assert per_image.min() >= 1 and per_image.max() <= 4 and (per_image > 1).any()


def test_annotations_match_the_semantic_map(shapes):
    coco = _coco(shapes, "train")
    for image in coco["images"]:
        mask_file = shapes / "train" / "masks" / Path(image["file_name"]).name
        semantic = np.asarray(Image.open(mask_file))
        covered = np.zeros_like(semantic, dtype=int)
        for ann in (a for a in coco["annotations"] if a["image_id"] == image["id"]):
            assert all(len(p) >= 6 and len(p) % 2 == 0 for p in ann["segmentation"])
            visible = _ann_mask(ann, 64)
            assert visible.sum() == ann["area"] > 0
            ys, xs = np.nonzero(visible)
            x, y, w, h = ann["bbox"]
            assert [x, y, w, h] == [xs.min(), ys.min(), xs.max() - xs.min() + 1,
                                    ys.max() - ys.min() + 1]
            assert x >= 0 and y >= 0 and x + w <= 64 and y + h <= 64
            assert (semantic[visible] == ann["category_id"]).mean() > 0.99
            covered += visible
        # every painted pixel belongs to exactly one instance, background to none
        assert np.array_equal(covered, (semantic > 0).astype(int))


def test_every_shape_contrasts_with_its_surroundings(shapes):
    coco = _coco(shapes, "train")
    for ann in coco["annotations"]:
        image_file = shapes / "train" / "images" / f"{ann['image_id'] - 1:06d}.png"
        image = np.asarray(Image.open(image_file), dtype=float)
        inside = _ann_mask(ann, 64)
        ring = cv2.dilate(inside.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool) & ~inside
        assert np.linalg.norm(image[inside].mean(axis=0) - image[ring].mean(axis=0)) > 40


def test_cli_reads_the_synth_section(tmp_path, capsys):
    params = tmp_path / "params.yaml"
    params.write_text("synth:\n  image_size: 48\n  splits: {train: 3, val: 1, test: 1}\n")
    synth.main(["--params", str(params), "--out", str(tmp_path / "out")])
    assert "train=3 val=1 test=1" in capsys.readouterr().out
    assert _coco(tmp_path / "out", "val")["images"][0]["width"] == 48
