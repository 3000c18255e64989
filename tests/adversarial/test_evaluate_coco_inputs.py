"""Every reader bounded (#20), at `visiongate evaluate-coco`: mistyped or deeply nested
ground truth and results, and RLEs not of their image's size, are one-line errors naming
the file — never a traceback.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from flows.cli import main

GT = {"images": [{"id": 1, "file_name": "a.png", "width": 64, "height": 48}],
      "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 2, 10, 10],
                       "area": 100, "iscrowd": 0}],
      "categories": [{"id": 1, "name": "a"}]}
RESULT = {"image_id": 1, "category_id": 1, "bbox": [1, 2, 10, 10], "score": 0.9}
RLE_OK = mask_utils.encode(np.asfortranarray(np.ones((48, 64), np.uint8)))


@pytest.mark.parametrize("which, content, message", [
    ("gt", [GT], "expected a COCO dataset object"),
    ("gt", {**GT, "images": {"a": 1}}, "`images` must be a list"),
    ("gt", {**GT, "images": ["x"]}, "images[0] is not an object"),
    ("gt", {**GT, "annotations": [{**GT["annotations"][0], "bbox": "1,2,3,4"}]},
     "annotations[0].bbox"),
    ("gt", {**GT, "annotations": [{**GT["annotations"][0], "bbox": {"x": 1}}]},
     "annotations[0].bbox"),
    ("gt", {**GT, "annotations": [{**GT["annotations"][0], "bbox": [[1], [2], [3], [4]]}]},
     "annotations[0].bbox"),
    ("gt", {**GT, "categories": [{"id": [1], "name": "a"}]}, "categories[0].id"),
    ("gt", "[" * 10000 + "]" * 10000, "nested 10000 deep"),
    ("pred", [{**RESULT, "bbox": "1,2,3,4"}], "results[0].bbox"),
    ("pred", [{**RESULT, "category_id": [1]}], "results[0].category_id"),
    ("pred", [{**RESULT, "score": "high"}], "results[0].score"),
    ("pred", [{**RESULT, "category_id": 7}], "category ids [7] are not categories"),
    ("pred", "[" * 10000 + "]" * 10000, "nested 10000 deep"),
])
def test_evaluate_coco_bad_shapes_are_one_line_errors(tmp_path, capsys, which, content,
                                                      message):
    files = {"gt": GT, "pred": [RESULT]}
    files[which] = content
    paths = {k: tmp_path / f"{k}.json" for k in files}
    for key, value in files.items():
        paths[key].write_text(value if isinstance(value, str) else json.dumps(value))
    rc = main(["evaluate-coco", str(paths["gt"]), str(paths["pred"])])
    out = capsys.readouterr()
    assert rc == 1 and out.out == "" and len(out.err.strip().splitlines()) == 1
    assert str(paths[which]) in out.err and message in out.err


@pytest.mark.parametrize("rle, message", [
    ({"size": [100000, 100000], "counts": "PPYo1"}, "size [100000, 100000] != the image's"),
    ({"size": [48, 64], "counts": [0, 100000]}, "runs cover 100000 pixels"),
    ({"size": [48, 64], "counts": "0`0"}, "runs cover"),
    ({"size": [48, 64], "counts": RLE_OK["counts"].decode()}, None),
    ({"size": [48, 64], "counts": [48 * 64]}, None),  # uncompressed: compressed, then scored
])
def test_evaluate_coco_refuses_rles_not_of_their_image_size(tmp_path, capsys, rle, message):
    gt = {**GT, "annotations": [{**GT["annotations"][0], "segmentation": [[1, 2, 11, 2, 11, 12]]}]}
    result = {**RESULT, "segmentation": rle}
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "pred.json").write_text(json.dumps([result]))
    rc = main(["evaluate-coco", str(tmp_path / "gt.json"), str(tmp_path / "pred.json"),
               "--iou-type", "segm"])
    err = capsys.readouterr().err
    if message is None:
        assert rc == 0, err
    else:
        assert rc == 1 and message in err and len(err.strip().splitlines()) == 1, err
