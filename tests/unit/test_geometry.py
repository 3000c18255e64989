"""visiongate.geometry: box formats and COCO segmentations, on hand-computed cases."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from visiongate import geometry


def test_xywh_to_xyxy_and_back():
    xyxy = geometry.xywh_to_xyxy([10, 20, 30, 40])
    np.testing.assert_array_equal(xyxy, [[10, 20, 40, 60]])
    assert xyxy.dtype == np.float64 and xyxy.shape == (1, 4)
    np.testing.assert_array_equal(geometry.xyxy_to_xywh(xyxy), [[10, 20, 30, 40]])


def test_accepts_lists_and_arrays_of_many_boxes():
    boxes = np.array([[0, 0, 1, 1], [2.5, 3.5, 4, 0.5]], np.float32)
    np.testing.assert_array_equal(geometry.xywh_to_xyxy(boxes), [[0, 0, 1, 1], [2.5, 3.5, 6.5, 4]])
    np.testing.assert_array_equal(geometry.xywh_to_xyxy(boxes.tolist()),
                                  geometry.xywh_to_xyxy(boxes))


def test_yolo_to_pixel_xyxy_in_a_200_by_100_image():
    # centre (0.5, 0.5) -> (100, 50) px; size (0.2, 0.4) -> 40 x 40 px
    xyxy = geometry.yolo_to_xyxy([[0.5, 0.5, 0.2, 0.4], [0.1, 0.2, 0.2, 0.4]], 200, 100)
    np.testing.assert_allclose(xyxy, [[80, 30, 120, 70], [0, 0, 40, 40]])


def test_xywh_to_yolo_in_a_200_by_100_image():
    yolo = geometry.xywh_to_yolo([[80, 30, 40, 40]], 200, 100)
    np.testing.assert_allclose(yolo, [[0.5, 0.5, 0.2, 0.4]])


@pytest.mark.parametrize(("in_fmt", "out_fmt"), [("xywh", "xyxy"), ("xywh", "cxcywh"),
                                                  ("xyxy", "cxcywh")])
def test_round_trips(in_fmt, out_fmt):
    boxes = np.random.default_rng(0).uniform(1, 100, (50, 4))
    there = geometry.convert_boxes(boxes, in_fmt, out_fmt)
    np.testing.assert_allclose(geometry.convert_boxes(there, out_fmt, in_fmt), boxes,
                               rtol=0, atol=1e-12)
    yolo = geometry.xywh_to_yolo(boxes, 200, 100)
    np.testing.assert_allclose(geometry.xyxy_to_xywh(geometry.yolo_to_xyxy(yolo, 200, 100)),
                               boxes, rtol=0, atol=1e-12)


@pytest.mark.parametrize("empty", [[], np.zeros((0, 4)), np.zeros(0, np.float32)])
def test_empty_inputs_give_0_by_4(empty):
    for fn in (geometry.xywh_to_xyxy, geometry.xyxy_to_xywh):
        assert fn(empty).shape == (0, 4)
    assert geometry.yolo_to_xyxy(empty, 200, 100).shape == (0, 4)
    assert geometry.xywh_to_yolo(empty, 200, 100).shape == (0, 4)


SQUARE = [[2, 3, 6, 3, 6, 7, 2, 7]]  # a 4 x 4 px square, corners (2, 3) and (6, 7)


def test_square_polygon_to_mask():
    mask = geometry.to_mask(SQUARE, 10, 12)
    assert mask.shape == (10, 12) and mask.dtype == np.uint8
    assert mask.sum() == 16
    assert mask[3:7, 2:6].all()


def test_two_polygons_are_merged():
    mask = geometry.to_mask(SQUARE + [[8, 0, 10, 0, 10, 2, 8, 2]], 10, 12)
    assert mask.sum() == 16 + 4


def _expected() -> np.ndarray:
    mask = np.zeros((10, 12), np.uint8)
    mask[3:7, 2:6] = 1
    return mask


def test_compressed_rle_to_mask_with_str_or_bytes_counts():
    rle = mask_utils.encode(np.asfortranarray(_expected()))
    for counts in (rle["counts"], rle["counts"].decode("ascii")):
        np.testing.assert_array_equal(geometry.to_mask({"size": [10, 12], "counts": counts},
                                                       10, 12), _expected())


def test_uncompressed_rle_to_mask():
    # column-major runs of the 10 x 12 mask: 2 empty columns + 3 rows, then per column
    # 4 set + 6 unset (the last gap runs on to the end)
    counts = [2 * 10 + 3] + [4, 6] * 3 + [4, 10 * 6 + 3]
    assert sum(counts) == 120
    mask = geometry.to_mask({"size": [10, 12], "counts": counts}, 10, 12)
    np.testing.assert_array_equal(mask, _expected())
    rle = geometry.to_rle({"size": [10, 12], "counts": counts}, 10, 12)
    assert isinstance(rle["counts"], bytes) and mask_utils.area(rle) == 16


def test_encode_masks_round_trip_as_json_ready_rles():
    masks = np.stack([_expected(), np.zeros((10, 12), np.uint8)]).astype(bool)
    rles = geometry.encode_masks(masks)
    assert [r["size"] for r in rles] == [[10, 12], [10, 12]]
    assert all(isinstance(r["counts"], str) for r in rles)
    np.testing.assert_array_equal(geometry.to_mask(rles[0], 10, 12), _expected())
    assert geometry.to_mask(rles[1], 10, 12).sum() == 0
    assert geometry.encode_mask(_expected()) == rles[0]
    assert geometry.encode_masks(np.zeros((0, 10, 12), bool)) == []


def test_importing_geometry_does_not_import_torch():
    code = "import sys, visiongate.geometry; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
