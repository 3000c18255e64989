"""Box formats and COCO segmentations, in one place.

Boxes go through torchvision.ops.box_convert: numpy (or nested lists) in, float64 numpy
(N, 4) out, an empty input giving shape (0, 4). Formats are torchvision's: "xyxy"
(corners), "xywh" (COCO: top-left corner, width, height), "cxcywh" (centre, size; YOLO's
labels are cxcywh divided by the image size). Convert a whole image's boxes per call:
one tensor round trip costs about as much as a few dozen boxes in Python.

Segmentations go through pycocotools: a COCO ``segmentation`` (polygon list, uncompressed
RLE with list counts, or compressed RLE with str or bytes counts) -> one compressed RLE ->
an (H, W) uint8 mask, and masks -> JSON-ready RLEs.

torch is imported on the first box conversion, not with this module: the import and
validation path (visiongate.datasets) uses the mask helpers and stays torch-free.
"""

from __future__ import annotations

import numpy as np
from pycocotools import mask as mask_utils


def convert_boxes(boxes, in_fmt: str, out_fmt: str) -> np.ndarray:
    """(N, 4) float64 boxes from ``in_fmt`` to ``out_fmt`` ("xyxy", "xywh", "cxcywh")."""
    import torch  # here, not at the top: see the module docstring
    from torchvision.ops import box_convert

    array = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return box_convert(torch.from_numpy(array), in_fmt, out_fmt).numpy()


def xywh_to_xyxy(boxes) -> np.ndarray:
    """COCO [x, y, w, h] -> corners [x1, y1, x2, y2]."""
    return convert_boxes(boxes, "xywh", "xyxy")


def xyxy_to_xywh(boxes) -> np.ndarray:
    """Corners [x1, y1, x2, y2] -> COCO [x, y, w, h]."""
    return convert_boxes(boxes, "xyxy", "xywh")


def yolo_to_xyxy(boxes, width: int, height: int) -> np.ndarray:
    """YOLO [cx, cy, w, h] normalised to [0, 1] -> pixel corners in a width x height image."""
    scale = np.array([width, height, width, height], dtype=np.float64)
    return convert_boxes(np.asarray(boxes, dtype=np.float64).reshape(-1, 4) * scale,
                         "cxcywh", "xyxy")


def xywh_to_yolo(boxes, width: int, height: int) -> np.ndarray:
    """Pixel COCO [x, y, w, h] -> YOLO [cx, cy, w, h] normalised by the image size (not
    clipped: a box past the border gives values outside [0, 1])."""
    scale = np.array([width, height, width, height], dtype=np.float64)
    return convert_boxes(boxes, "xywh", "cxcywh") / scale


def to_rle(segmentation, height: int, width: int) -> dict:
    """One compressed RLE (bytes counts) of a COCO segmentation: polygons (merged),
    uncompressed RLE or compressed RLE (pycocotools' annToRLE logic)."""
    if isinstance(segmentation, list):
        return mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    counts = segmentation["counts"]
    if isinstance(counts, list):
        return mask_utils.frPyObjects(segmentation, height, width)
    return {"size": list(segmentation["size"]),
            "counts": counts.encode("ascii") if isinstance(counts, str) else counts}


def to_mask(segmentation, height: int, width: int) -> np.ndarray:
    """(H, W) uint8 0/1 mask of a COCO segmentation (see to_rle for the forms taken)."""
    return mask_utils.decode(to_rle(segmentation, height, width)).astype(np.uint8)


def encode_masks(masks) -> list[dict]:
    """(N, H, W) binary masks -> N JSON-ready RLEs: {"size": [h, w], "counts": str}."""
    masks = np.asarray(masks).astype(np.uint8)
    if not len(masks):
        return []
    rles = mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0)))
    return [{"size": [int(v) for v in r["size"]], "counts": r["counts"].decode("ascii")}
            for r in rles]


def encode_mask(mask) -> dict:
    """One (H, W) binary mask -> a JSON-ready RLE: {"size": [h, w], "counts": str}."""
    return encode_masks(np.asarray(mask)[None])[0]
