"""The object-crops view a classifier trains on (visiongate.datasets.crops)."""

import json

import pytest
from PIL import Image

from visiongate.config import SynthConfig, load_params
from visiongate.datasets.coco import load_split
from visiongate.datasets.crops import crop_box, crops_view, model_data
from visiongate.datasets.image_labels import single_label_images
from visiongate.datasets.prepare import tree_md5
from visiongate.datasets.synth import generate
from visiongate.errors import ConfigError, DataError


def test_crop_box_grows_by_the_margin_and_clips_to_the_image():
    assert crop_box([10, 20, 30, 40], 100, 100) == (7, 16, 43, 64)    # 10 % of w / h each side
    assert crop_box([0, 0, 50, 50], 60, 60) == (0, 0, 55, 55)         # clipped at 0
    assert crop_box([40, 40, 20, 20], 60, 60) == (38, 38, 60, 60)     # clipped at the size
    assert crop_box([5, 5, 3, 40], 60, 60) is None                    # under MIN_SIDE wide


@pytest.fixture
def shapes(tmp_path):
    root = tmp_path / "prepared" / "shapes"
    generate(SynthConfig(seed=2, image_size=64, splits={"train": 6, "val": 3, "test": 3}), root)
    return root


def test_every_object_becomes_one_labelled_crop_of_its_box(shapes, tmp_path):
    before = tree_md5(shapes)
    view = crops_view(shapes, tmp_path / "views")
    assert tree_md5(shapes) == before                                 # the source only read
    for split in ("train", "val", "test"):
        source, crops = load_split(shapes / split), load_split(view / split)
        objects = [a for anns in source.annotations.values() for a in anns
                   if min(a["bbox"][2:]) >= 4]
        assert len(crops.images) == len(objects) > 0
        assert not any(crops.annotations.values())                    # image labels only
        assert crops.class_names == source.class_names
        by_id = {a["id"]: a for a in objects}
        for image, label in single_label_images(crops):
            ann = by_id[image["source"]["annotation"]]
            assert label == ann["category_id"]
            x, y, w, h = ann["bbox"]
            with Image.open(crops.image_path(image)) as im:
                assert im.size == (image["width"], image["height"])
                assert w <= im.width <= 1.2 * w + 2 and h <= im.height <= 1.2 * h + 2


def test_the_view_is_reused_until_the_annotations_change(shapes, tmp_path):
    first = crops_view(shapes, tmp_path / "views")
    stamp = (first / ".complete").stat().st_mtime_ns
    assert crops_view(shapes, tmp_path / "views") == first
    assert (first / ".complete").stat().st_mtime_ns == stamp          # not rewritten
    coco = json.loads((shapes / "test" / "annotations.json").read_text())
    coco["annotations"] = coco["annotations"][1:]                     # one object fewer
    (shapes / "test" / "annotations.json").write_text(json.dumps(coco))
    second = crops_view(shapes, tmp_path / "views")
    assert second != first
    assert len(load_split(second / "test").images) == len(load_split(first / "test").images) - 1


def test_model_data_per_view(shapes, tmp_path):
    assert model_data(shapes, tmp_path / "views", "image") == shapes
    assert model_data(shapes, tmp_path / "views", "crops").parent == tmp_path / "views"
    labels_only = tmp_path / "labels-only"
    for split in ("train", "val", "test"):
        (labels_only / split).mkdir(parents=True)
        (labels_only / split / "annotations.json").write_text(json.dumps(
            {"images": [{"id": 1, "file_name": "a.png", "labels": [1]}], "annotations": [],
             "categories": [{"id": 1, "name": "cat"}]}))
    with pytest.raises(DataError, match="no objects to crop.*classify.view: image"):
        model_data(labels_only, tmp_path / "views", "crops")


def test_crops_are_single_label_only(tmp_path):
    (tmp_path / "params.yaml").write_text("classify:\n  view: crops\n  multi_label: true\n")
    with pytest.raises(ConfigError, match="view 'crops'.*single-label"):
        load_params(tmp_path / "params.yaml")
