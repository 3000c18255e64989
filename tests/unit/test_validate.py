"""One tiny source per bad-input kind: its quarantine line, the good items kept, and the
source's bytes unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from visiongate.config import ValidationConfig
from visiongate.datasets.coco import SPLITS, load_split
from visiongate.datasets.prepare import prepare, tree_md5
from visiongate.datasets.validate import check_object, check_prepared, read_quarantine
from visiongate.outcomes import QuarantineSummary

CFG = ValidationConfig(max_quarantine_share=0.2, clip_tolerance=0.02)
GOOD = 6  # good images beside each bad one: 1 of 7 quarantined stays under 20 %


def _yolo(root, s):
    return s.make_yolo(root, n=GOOD)


def _label(root: Path) -> Path:
    return root / "labels" / "train" / "train0.txt"


def truncated(root, s):
    src = _yolo(root, s)
    path = s.write_image(src / "images" / "train" / "bad.png")
    path.write_bytes(path.read_bytes()[:200])
    return "yolo", "images/train/bad.png", "image_left_out"


def zero_byte(root, s):
    src = _yolo(root, s)
    (src / "images" / "train" / "empty.jpg").write_bytes(b"")
    return "yolo", "images/train/empty.jpg", "image_left_out"


def not_an_image(root, s):
    src = _yolo(root, s)
    (src / "images" / "train" / "notes.png").write_text("these are not pixels")
    return "yolo", "images/train/notes.png", "image_left_out"


def size_mismatch(root, s):
    src = s.make_coco(root, n=GOOD + 1)
    path = src / "train" / "instances_train.json"
    coco = json.loads(path.read_text())
    coco["images"][0]["width"] = 100
    path.write_text(json.dumps(coco))
    return "coco", "train/images/train0.png", "image_left_out"


def clipped(root, s):
    src = _yolo(root, s)
    # 1 px (1.6 % of 64 px) past the right edge: within the 2 % tolerance
    _label(src).write_text(s.yolo_line(0, [45.0, 10.0, 20.0, 10.0]) + "\n")
    return "yolo", "labels/train/train0.txt", "fixed"


def box_outside(root, s):
    src = _yolo(root, s)
    _label(src).write_text(s.yolo_line(0, [8.0, 6.0, 20.0, 12.0]) + "\n"
                           + s.yolo_line(1, [60.0, 10.0, 20.0, 10.0]) + "\n")
    return "yolo", "labels/train/train0.txt", "object_left_out"


def degenerate_box(root, s):
    src = s.make_voc(root, n=GOOD)
    xml = src / "VOC" / "Annotations" / "img0.xml"
    xml.write_text(s.voc_xml("img0.png", [("cat", [8.0, 6.0, 20.0, 12.0]),
                                          ("dog", [30.0, 20.0, -5.0, 10.0])]))
    return "voc", "VOC/Annotations/img0.xml", "object_left_out"


def non_finite(root, s):
    src = _yolo(root, s)
    _label(src).write_text("0 nan 0.5 0.1 0.1\n" + s.yolo_line(1, [30.0, 20.0, 16.0, 20.0]) + "\n")
    return "yolo", "labels/train/train0.txt", "object_left_out"


def unknown_class_id(root, s):
    src = _yolo(root, s)
    _label(src).write_text(s.yolo_line(7, [8.0, 6.0, 20.0, 12.0]) + "\n")
    return "yolo", "labels/train/train0.txt", "object_left_out"


def unknown_class_name(root, s):
    src = s.make_voc(root, n=GOOD)
    (src / "labels.txt").write_text("cat\ndog\n")
    xml = src / "VOC" / "Annotations" / "img0.xml"
    xml.write_text(s.voc_xml("img0.png", [("cat", [8.0, 6.0, 20.0, 12.0]),
                                          ("horse", [30.0, 20.0, 16.0, 20.0])]))
    return "voc", "VOC/Annotations/img0.xml", "object_left_out"


def malformed_line(root, s):
    src = _yolo(root, s)
    _label(src).write_text("0 0.5 0.5\n" + s.yolo_line(1, [30.0, 20.0, 16.0, 20.0]) + "\n")
    return "yolo", "labels/train/train0.txt", "object_left_out"


def malformed_xml(root, s):
    src = s.make_voc(root, n=GOOD + 1)
    (src / "VOC" / "Annotations" / "img0.xml").write_text("<annotation><filename>img0.png")
    return "voc", "VOC/Annotations/img0.xml", "image_left_out"


def malformed_json(root, s):
    src = s.make_coco(root, n=GOOD)
    (src / "train" / "extra.json").write_text('{"images": [')
    return "coco", "train/extra.json", "file_left_out"


def short_polygon(root, s):
    src = s.make_coco(root, n=GOOD)
    path = src / "train" / "instances_train.json"
    coco = json.loads(path.read_text())
    coco["annotations"][0]["segmentation"] = [[8, 6, 28, 6]]
    path.write_text(json.dumps(coco))
    return "coco", "train/instances_train.json", "object_left_out"


def mask_size_mismatch(root, s):
    src = s.make_masks(root, n=GOOD + 1)
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(src / "label" / "0.png")
    return "masks", "image/0.png", "image_left_out"


def duplicate_box(root, s):
    src = _yolo(root, s)
    line = s.yolo_line(0, [8.0, 6.0, 20.0, 12.0]) + "\n"
    _label(src).write_text(line + line)
    return "yolo", "labels/train/train0.txt", "fixed"


def missing_label(root, s):
    src = _yolo(root, s)
    s.write_image(src / "images" / "train" / "lonely.png", seed=77)  # other pixels
    return "yolo", "images/train/lonely.png", "kept"


def missing_image(root, s):
    src = _yolo(root, s)
    (src / "labels" / "train" / "ghost.txt").write_text(s.yolo_line(0, [8, 6, 20, 12]) + "\n")
    return "yolo", "labels/train/ghost.txt", "file_left_out"


CASES = {
    "unreadable_image": truncated, "zero_byte": zero_byte, "not_an_image": not_an_image,
    "size_mismatch": size_mismatch, "clipped": clipped, "box_outside": box_outside,
    "degenerate_box": degenerate_box, "non_finite": non_finite,
    "unknown_class": unknown_class_id, "unknown_class/name": unknown_class_name,
    "malformed": malformed_line, "malformed/xml": malformed_xml,
    "malformed/json": malformed_json, "short_polygon": short_polygon,
    "mask_size_mismatch": mask_size_mismatch, "duplicate_box": duplicate_box,
    "missing_label": missing_label, "missing_image": missing_image,
}


@pytest.mark.parametrize("case", CASES)
def test_each_bad_input_gets_its_quarantine_line(case, tmp_path, sources):
    fmt, file, action = CASES[case](tmp_path / "src", sources)
    before = tree_md5(tmp_path / "src")
    info = prepare(fmt, tmp_path / "src", tmp_path / "out", cfg=CFG)
    lines = read_quarantine(tmp_path / "out" / "quarantine.csv")
    kind = case.split("/")[0]
    assert [(i.file, i.kind, i.action) for i in lines] == [(file, kind, action)], lines
    assert lines[0].detail
    assert tree_md5(tmp_path / "src") == before  # the source's bytes never change
    summary = check_prepared(tmp_path / "out")
    assert summary.quarantined == (1 if action == "image_left_out" else 0)
    assert summary.images == sum(info["images"].values())
    assert summary.by_kind == {kind: 1}


def test_clipped_box_is_clipped_and_good_objects_stay(tmp_path, sources):
    clipped(tmp_path / "src", sources)
    prepare("yolo", tmp_path / "src", tmp_path / "out", cfg=CFG)
    boxes = [a["bbox"] for s in SPLITS for im, anns in
             load_split(tmp_path / "out" / s).annotations.items() for a in anns]
    assert [45.0, 10.0, 19.0, 10.0] in boxes  # x + w clipped from 65 to the 64 px edge
    assert len(boxes) == 1 + 2 * GOOD - 2  # the rewritten label holds one object


def test_too_many_quarantined_images_fail_with_the_share(tmp_path, sources):
    src = sources.make_yolo(tmp_path / "src", n=3)
    for k in range(2):
        (src / "images" / "train" / f"empty{k}.png").write_bytes(b"")
    with pytest.raises(ValueError, match=r"2 of 5 images quarantined \(40.0%\).*max_quarantine"):
        prepare("yolo", src, tmp_path / "out", cfg=CFG)
    assert len(read_quarantine(tmp_path / "out" / "quarantine.csv")) == 2  # written anyway


def test_empty_split_after_quarantine_is_a_clear_error(tmp_path, sources):
    src = sources.make_yolo(tmp_path / "src", n=2)
    (src / "images" / "train" / "empty.png").write_bytes(b"")
    with pytest.raises(ValueError, match=r"split\(s\) val, test empty after quarantine"):
        prepare("yolo", src, tmp_path / "out",
                cfg=ValidationConfig(max_quarantine_share=0.5))


def test_unusable_data_is_a_clear_error(tmp_path, sources):
    src = tmp_path / "src"
    (src / "images").mkdir(parents=True)
    (src / "images" / "a.png").write_bytes(b"")
    with pytest.raises(ValueError, match="no usable yolo image"):
        prepare("yolo", src, tmp_path / "out", cfg=CFG)


def test_check_prepared_names_a_broken_split(tmp_path, sources):
    sources.make_yolo(tmp_path / "src", n=7)
    prepare("yolo", tmp_path / "src", tmp_path / "out", cfg=CFG)
    image = load_split(tmp_path / "out" / "val").images[0]
    (tmp_path / "out" / "val" / image["file_name"]).unlink()
    with pytest.raises(ValueError, match=r"broken image.*val"):
        check_prepared(tmp_path / "out")
    (tmp_path / "out" / "test" / "annotations.json").write_text("{")
    with pytest.raises(ValueError, match="test"):
        check_prepared(tmp_path / "out")


def test_check_prepared_on_a_generated_dataset_has_no_quarantine(tmp_path):
    from visiongate.config import SynthConfig
    from visiongate.datasets.synth import generate

    generate(SynthConfig(image_size=32, splits={"train": 2, "val": 1, "test": 1}), tmp_path)
    assert check_prepared(tmp_path) == QuarantineSummary(images=4, quarantined=0, share=0.0,
                                                         by_kind={})


def test_a_point_annotation_is_a_tiny_box_not_an_object(tmp_path):
    """VOC's inclusive pixels turn xmin == xmax into a 1 px wide box: a labelling slip."""
    from visiongate.datasets.formats.base import Obj

    size = (100, 80)
    point, _ = check_object(Obj(1, [10, 10, 1, 1]), size, 0.02, min_box=2)
    thin, found = check_object(Obj(1, [10, 10, 1.5, 30]), size, 0.02, min_box=2)
    kept, none = check_object(Obj(1, [10, 10, 2, 2]), size, 0.02, min_box=2)
    assert point is None and thin is None and found[0][0] == "tiny_box"
    assert "under validation.min_box_px 2" in found[0][1]
    assert kept is not None and none == []
    assert check_object(Obj(1, [10, 10, 1, 1]), size, 0.02, min_box=0)[0] is not None
    # clipped first: a box mostly outside the image leaves a sliver
    sliver, found = check_object(Obj(1, [99, 10, 3, 30]), size, 0.05, min_box=2)
    assert sliver is None and [k for k, *_ in found] == ["clipped", "tiny_box"]
