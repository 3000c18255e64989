"""Every reader bounded (#20): each hostile file found on a clean clone is now a quarantine
line or a one-line error naming the file — never a traceback, a MemoryError or a flood —
nothing is allocated from an unchecked value (tracemalloc peaks), and the source's bytes
are unchanged. The last test runs a seeded slice of benchmarks/fuzz_readers.py;
evaluate-coco's inputs: test_evaluate_coco_inputs.py.
"""

from __future__ import annotations

import json
import sys
import tracemalloc
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from visiongate.config import ValidationConfig
from visiongate.datasets import safe_load
from visiongate.datasets.formats import base, masks, read_source
from visiongate.datasets.prepare import prepare, tree_md5
from visiongate.datasets.validate import read_quarantine, validate
from visiongate.errors import DataError
from visiongate.robustness import corrupt_split

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
from benchmarks import fuzz_inputs, fuzz_readers  # noqa: E402

CFG = ValidationConfig(max_quarantine_share=1.0)


def _issues(fmt: str, src: Path):
    """(source, kept items, issues) of read + validate, checking the source is unchanged."""
    before = tree_md5(src)
    with safe_load.pixel_limit(CFG.max_pixels):
        source = read_source(fmt, src)
        kept, issues = validate(source, CFG.clip_tolerance)
    assert tree_md5(src) == before
    return source, kept, issues


def _one(issues, kind: str):
    found = [i for i in issues if i.kind == kind]
    assert len(found) == 1, issues
    assert len(found[0].detail) < 300  # a line, not a flood
    return found[0]


@contextmanager
def peak_below(megabytes: int):
    """Python and numpy allocations inside the block stay under `megabytes`."""
    tracemalloc.start()
    try:
        yield
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < megabytes * 2**20, f"peak {peak / 2**20:.0f} MiB"


# ---- the cases of the issue ---------------------------------------------------------
def test_voc_infinite_width_is_a_quarantine_line(tmp_path, sources):
    src = sources.make_voc(tmp_path / "src", n=3)
    xml = src / "VOC" / "Annotations" / "img0.xml"
    xml.write_text(xml.read_text().replace(f"<width>{sources.W}<", "<width>inf<"))
    _, kept, issues = _issues("voc", src)
    line = _one(issues, base.MALFORMED)
    assert line.file == "VOC/Annotations/img0.xml" and line.action == base.IMAGE_LEFT_OUT
    assert "<width> inf is not an image size" in line.detail and len(kept) == 2


def test_16_bit_mask_value_300_is_unknown_class(tmp_path, sources):
    src = sources.make_masks(tmp_path / "src", n=3)
    mask = sources.scene_mask().astype(np.uint16)
    mask[mask == 255] = 300
    Image.fromarray(mask).save(src / "label" / "0.png")
    source, kept, issues = _issues("masks", src)
    line = _one(issues, base.UNKNOWN_CLASS)
    assert "values [300]" in line.detail and line.action == base.IMAGE_LEFT_OUT
    assert source.classes == ["foreground"] and len(kept) == 2


def test_32_bit_tiff_mask_value_2e9_is_unknown_class_in_bounded_memory(tmp_path, sources):
    src = sources.make_masks(tmp_path / "src", n=3)
    (src / "label" / "0.png").unlink()
    mask = sources.scene_mask().astype(np.int32)
    mask[mask == 255] = 2_000_000_000
    Image.fromarray(mask).save(src / "label" / "0.tif")
    with peak_below(32):
        source, _, issues = _issues("masks", src)
    assert "values [2000000000]" in _one(issues, base.UNKNOWN_CLASS).detail
    assert source.classes == ["foreground"]


def test_yolo_class_1e9_without_names_in_bounded_memory(tmp_path, sources):
    src = sources.make_yolo(tmp_path / "src", n=3)
    (src / "data.yaml").unlink()
    (src / "labels" / "train" / "train0.txt").write_text("1e9 0.5 0.5 0.1 0.1\n")
    with peak_below(32):
        source, _, issues = _issues("yolo", src)
    line = _one(issues, base.UNKNOWN_CLASS)
    assert "class 1000000000 not in 0..9999 (no names file)" in line.detail
    assert source.classes == ["class_0", "class_1"]


def test_200_mp_mask_is_too_large_and_never_decoded(tmp_path, sources):
    src = sources.make_masks(tmp_path / "src", n=3)
    fuzz_inputs.huge_png(src / "label" / "0.png", 20000, 10000)
    with peak_below(64):
        _, kept, issues = _issues("masks", src)
    line = _one(issues, base.TOO_LARGE)
    assert "200.0 MP > the limit 40 MP" in line.detail and line.action == base.IMAGE_LEFT_OUT
    assert len(kept) == 2


def test_90_mp_image_is_too_large_at_import_without_a_warning(tmp_path, sources):
    src = sources.make_yolo(tmp_path / "src", n=4)
    fuzz_inputs.huge_png(src / "images" / "train" / "train0.png", 10000, 9000)
    before = tree_md5(src)
    with peak_below(64), warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        info = prepare("yolo", src, tmp_path / "out", cfg=CFG)
    line = _one(read_quarantine(tmp_path / "out" / "quarantine.csv"), base.TOO_LARGE)
    assert line.file == "images/train/train0.png" and "90.0 MP" in line.detail
    assert sum(info["images"].values()) == 3 and tree_md5(src) == before


def test_the_pixel_limit_is_validation_max_pixels(tmp_path, sources):
    src = sources.make_yolo(tmp_path / "src", n=3)
    with pytest.raises(DataError, match="no usable"):
        prepare("yolo", src, tmp_path / "out", cfg=ValidationConfig(max_pixels=1000))
    lines = read_quarantine(tmp_path / "out" / "quarantine.csv")
    assert {i.kind for i in lines} == {base.TOO_LARGE} and len(lines) == 3
    assert "> the limit 0.001 MP (validation.max_pixels)" in lines[0].detail


COCO_SHAPES = {
    "top level a list": lambda c: [c],
    "images a dict": lambda c: {**c, "images": {"a": 1}},
    "an image a string": lambda c: {**c, "images": ["x", *c["images"]]},
    "bbox a string": lambda c: {**c, "annotations": [{**a, "bbox": "1,2,3,4"}
                                                     for a in c["annotations"]]},
    "bbox a dict": lambda c: {**c, "annotations": [{**a, "bbox": {"x": 1}}
                                                   for a in c["annotations"]]},
    "bbox nested lists": lambda c: {**c, "annotations": [{**a, "bbox": [[1], [2], [3], [4]]}
                                                         for a in c["annotations"]]},
    "category id a list": lambda c: {**c, "categories": [{**k, "id": [k["id"]]}
                                                         for k in c["categories"]]},
    "10,000-deep arrays": None,
}


@pytest.mark.parametrize("shape", COCO_SHAPES)
def test_mistyped_or_deep_coco_json_is_quarantined(tmp_path, sources, shape):
    src = sources.make_coco(tmp_path / "src", n=3)
    path = src / "train" / "instances_train.json"
    change = COCO_SHAPES[shape]
    path.write_text("[" * 10000 + "]" * 10000 if change is None
                    else json.dumps(change(json.loads(path.read_text()))))
    _, _, issues = _issues("coco", src)
    malformed = [i for i in issues if i.kind == base.MALFORMED]
    assert malformed and all(i.file == "train/instances_train.json" for i in malformed)
    assert all(len(i.detail) < 300 for i in issues)


def test_data_yaml_alias_bomb_is_a_one_line_error(tmp_path, sources):
    src = sources.make_yolo(tmp_path / "src", n=3)
    levels = ["a: &a [" + ", ".join(["x" * 100] * 10) + "]"] + [
        f"{c}: &{c} [" + ", ".join([f"*{p}"] * 10) + "]" for p, c in zip("abcd", "bcde")]
    (src / "data.yaml").write_text("\n".join(levels) + "\nnames: [*e, dog]\n")
    with pytest.raises(DataError) as raised:
        prepare("yolo", src, tmp_path / "out", cfg=CFG)
    message = str(raised.value)
    assert "data.yaml" in message and "aliases" in message and "\n" not in message
    assert not (tmp_path / "out" / "train" / "annotations.json").exists()


@pytest.mark.parametrize("text, message", [
    ("names: [" + "x" * (2 * 2**20) + "]\n", "bigger than 1 MiB"),
    ("names: [" + "x" * 300 + ", dog]\n", "longer than 256"),
    ("names: " + "[" * 500 + "]" * 500 + "\n", "nested more than 64"),
])
def test_huge_or_deep_names_are_one_line_errors(tmp_path, sources, text, message):
    src = sources.make_yolo(tmp_path / "src", n=3)
    (src / "data.yaml").write_text(text)
    with pytest.raises(DataError, match=message):
        read_source("yolo", src)


def test_a_noise_mask_is_too_large_past_the_instance_bound(tmp_path, sources, monkeypatch):
    monkeypatch.setattr(masks, "MAX_INSTANCES", 20)
    src = sources.make_masks(tmp_path / "src", n=3)
    noise = (np.random.default_rng(0).random((sources.H, sources.W)) < 0.3) * 255
    Image.fromarray(noise.astype(np.uint8)).save(src / "label" / "0.png")
    _, _, issues = _issues("masks", src)
    assert "more than 20 instances" in _one(issues, base.TOO_LARGE).detail


def test_more_than_255_classes_import_without_label_maps(tmp_path, sources):
    src = sources.make_yolo(tmp_path / "src", n=3, polygons=True)
    (src / "data.yaml").unlink()
    (src / "names.txt").write_text("".join(f"c{k}\n" for k in range(300)))
    info = prepare("yolo", src, tmp_path / "out", cfg=CFG)
    assert len(info["classes"]) == 300 and info["has_masks"] is False


# ---- the serving and evaluation images ------------------------------------------------
def test_image_size_is_read_from_the_header_for_serving_and_evaluation(tmp_path):
    huge = fuzz_inputs.huge_png(tmp_path / "huge.png", 20000, 10000)
    with peak_below(32):
        with pytest.raises(safe_load.ImageTooLarge, match="200.0 MP > the limit 40 MP"):
            safe_load.image_size(huge.read_bytes())
        with pytest.raises(safe_load.ImageTooLarge, match="huge.png"):
            safe_load.check_images([huge])
    with pytest.raises(DataError, match="not a readable image"):
        safe_load.image_size(b"not an image")
    with safe_load.pixel_limit(200_000_000):  # a configured limit applies to Pillow too
        assert safe_load.image_size(huge.read_bytes()) == (20000, 10000)


def test_robustness_copies_refuse_an_image_over_the_limit(tmp_path, sources):
    src = sources.make_coco(tmp_path / "src", n=2)
    split = src / "train"
    (split / "annotations.json").write_text((split / "instances_train.json").read_text())
    with safe_load.pixel_limit(1000), pytest.raises(safe_load.ImageTooLarge, match="train0.png"):
        corrupt_split(split, tmp_path / "copy", "blur", 1)
    assert not (tmp_path / "copy").exists()


@pytest.mark.fuzz
@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow on the damaged TIFFs drawn
@pytest.mark.parametrize("target", fuzz_readers.TARGETS)
def test_fuzz_slice(tmp_path, target):
    """A seeded slice of `make bench`'s fuzz: every input ends as a result, quarantine lines
    or a VisiongateError, with the source unchanged."""
    result = fuzz_readers.fuzz(target, tmp_path, max_examples=25, start_seed=0)
    assert result["findings"] == [] and result["tried"] == 25
