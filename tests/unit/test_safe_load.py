"""safe_load's building blocks (#20): the JSON depth scan, COCO RLE run decoding, and the
one-pass instance RLEs of mask folders — each against pycocotools."""

from __future__ import annotations

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from visiongate import geometry
from visiongate.datasets import safe_load
from visiongate.datasets.formats import masks


def _one_mask_per_component(label_map: np.ndarray) -> list:
    """The reference: a full-size mask per connected component, encoded by pycocotools."""
    found = []
    for category in np.unique(label_map)[1:]:
        count, components = cv2.connectedComponents((label_map == category).astype(np.uint8),
                                                    connectivity=8)
        found += [(int(category), geometry.encode_mask(components == k))
                  for k in range(1, count)]
    return found


def test_mask_instances_are_the_components_pycocotools_encodes():
    rng = np.random.default_rng(1)
    for shape in [(40, 30), (1, 7), (9, 1), (16, 16)]:
        label_map = ((rng.random(shape) < 0.4) * rng.integers(1, 3, shape)).astype(np.uint8)
        got = [(o.category, o.rle) for o in masks.mask_objects(label_map)]
        assert got == _one_mask_per_component(label_map)
    assert masks.mask_objects(np.full((5, 5), 2, np.uint8))[0].bbox == [0.0, 0.0, 5.0, 5.0]


def test_json_depth_skips_brackets_in_strings():
    assert safe_load.json_depth(b'[[{"a": "[[[[", "b": "\\\\", "c": "\\"]]"}]]') == 3
    assert safe_load.json_depth(b"[" * 10000) == 10000


def test_rle_counts_match_pycocotools():
    rng = np.random.default_rng(2)
    for _ in range(20):
        mask = (rng.random((17, 23)) < rng.random()).astype(np.uint8)
        rle = mask_utils.encode(np.asfortranarray(mask))
        runs = safe_load.rle_counts(rle["counts"].decode())
        assert runs.sum() == mask.size and runs[1::2].sum() == mask.sum()
