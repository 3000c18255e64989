"""Read the canonical layout (images/, masks/, annotations.json per split) and export the
Ultralytics YOLO detection layout into a derived cache.

A split directory holds `images/*.png`, `masks/*.png` (mode "L", 0 = background, k =
category id k) and a COCO `annotations.json` whose `file_name`s are relative to it.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from visiongate import geometry
from visiongate.datasets import safe_load
from visiongate.errors import DataError, NotFound
from visiongate.paths import SPLITS

COCO_KEYS = ("images", "annotations", "categories")


@dataclass(frozen=True)
class Split:
    root: Path                              # the split directory
    images: list[dict]
    annotations: dict[int, list[dict]]      # image id -> its annotations ([] when none)
    categories: list[dict]

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(c["name"] for c in sorted(self.categories, key=lambda c: c["id"]))

    def image_path(self, image: dict) -> Path:
        return self.root / image["file_name"]

    def mask_path(self, image: dict) -> Path:
        return self.root / "masks" / (Path(image["file_name"]).stem + ".png")

    def coco_dict(self) -> dict:
        """The COCO dict; for pycocotools: `coco = COCO(); coco.dataset = ...; coco.createIndex()`.

        Shares the dicts held by this Split: copy before mutating.
        """
        annotations = [a for anns in self.annotations.values() for a in anns]
        return {"images": self.images, "annotations": annotations,
                "categories": self.categories}


def load_split(split_dir: Path) -> Split:
    """Load one split's annotations.json; NotFound / DataError name the file."""
    split_dir = Path(split_dir)
    path = split_dir / "annotations.json"
    if not path.is_file():
        raise NotFound(f"no COCO annotations at {path}")
    coco = safe_load.load_json(path)  # bounded: size and nesting checked before parsing
    if not isinstance(coco, dict) or any(not isinstance(coco.get(k), list) for k in COCO_KEYS):
        raise DataError(f"{path} is not a COCO dict: needs lists {', '.join(COCO_KEYS)}")
    try:
        by_image: dict[int, list[dict]] = {image["id"]: [] for image in coco["images"]}
        for ann in coco["annotations"]:
            by_image.setdefault(ann["image_id"], []).append(ann)
    except (KeyError, TypeError) as err:
        raise DataError(f"{path}: image or annotation without an id/image_id ({err!r})") from err
    return Split(split_dir, coco["images"], by_image, coco["categories"])


def read_semantic_mask(split: Split, image: dict) -> np.ndarray:
    """The (H, W) uint8 label map of an image: 0 = background, k = category id k."""
    path = split.mask_path(image)
    if not path.is_file():
        raise NotFound(f"no semantic mask at {path}")
    with safe_load.pixel_guard(path), Image.open(path) as mask_image:
        safe_load.check_pixels(mask_image.size, path)  # before decoding
        if mask_image.mode != "L":
            raise DataError(f"{path}: mask mode is {mask_image.mode!r}, expected 'L'")
        mask = np.asarray(mask_image, dtype=np.uint8)
    if mask.shape != (image["height"], image["width"]):
        raise DataError(f"{path}: mask is {mask.shape[::-1]} (w, h), image says "
                        f"({image['width']}, {image['height']})")
    return mask


def link_or_copy(src: Path, dst: Path) -> None:
    """dst as a hard link to src (no bytes copied), a copy where links cannot be made."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:  # other filesystem, or links not allowed there
        shutil.copy2(src, dst)


def _yolo_lines(anns: list[dict], image: dict, class_index: dict[int, int]) -> list[str]:
    """`cls cx cy w h`, normalised to [0, 1]; crowd regions are left out, as ultralytics does."""
    anns = [a for a in anns if not a.get("iscrowd", 0)]
    boxes = np.clip(geometry.xywh_to_yolo([a["bbox"] for a in anns], image["width"],
                                          image["height"]), 0, 1)
    return [f"{class_index[ann['category_id']]} " + " ".join(f"{v:.6f}" for v in box)
            for ann, box in zip(anns, boxes, strict=True)]


def _export_split(split: Split, name: str, out_dir: Path, class_index: dict[int, int]) -> None:
    images_dir, labels_dir = out_dir / "images" / name, out_dir / "labels" / name
    for stale in (images_dir, labels_dir):
        if stale.exists():
            shutil.rmtree(stale)
        stale.mkdir(parents=True)
    (out_dir / "labels" / f"{name}.cache").unlink(missing_ok=True)  # ultralytics' label cache
    seen: set[str] = set()
    for image in split.images:
        file_name = Path(image["file_name"]).name
        if file_name in seen:
            raise DataError(f"{split.root}: two images named {file_name!r}; "
                            "YOLO needs unique names")
        seen.add(file_name)
        link_or_copy(split.image_path(image), images_dir / file_name)
        lines = _yolo_lines(split.annotations.get(image["id"], []), image, class_index)
        label = labels_dir / (Path(file_name).stem + ".txt")
        label.write_text("".join(line + "\n" for line in lines))


def export_yolo(dataset_root: Path, out_dir: Path) -> Path:
    """Write images/{split}, labels/{split} and data.yaml under out_dir; return data.yaml.

    YOLO class = position of the category in id order (= category id - 1 for the
    canonical 1..K ids). out_dir is a derived cache: ultralytics writes `*.cache` beside the
    labels, so it must never lie inside the (DVC-tracked) dataset_root.
    """
    dataset_root, out_dir = Path(dataset_root).resolve(), Path(out_dir).resolve()
    if out_dir == dataset_root or dataset_root in out_dir.parents:
        raise ValueError(f"export dir {out_dir} is inside the dataset {dataset_root}")
    present = [s for s in SPLITS if (dataset_root / s / "annotations.json").is_file()]
    if not present:
        raise NotFound(f"no split with annotations.json under {dataset_root}")
    splits = {name: load_split(dataset_root / name) for name in present}
    categories = sorted(splits[present[0]].categories, key=lambda c: c["id"])
    class_index = {c["id"]: i for i, c in enumerate(categories)}
    for name, split in splits.items():
        if split.class_names != splits[present[0]].class_names:
            raise DataError(f"{split.root}: categories differ from the {present[0]} split")
        _export_split(split, name, out_dir, class_index)
    data = {"path": str(out_dir), **{name: f"images/{name}" for name in present},
            "names": {i: c["name"] for i, c in enumerate(categories)}}
    data_yaml = out_dir / "data.yaml"
    data_yaml.write_text(yaml.safe_dump(data, sort_keys=False))
    return data_yaml
