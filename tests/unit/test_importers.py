"""Each importer on tiny generated sources, a YOLO round trip, and the real datasets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from visiongate.config import ValidationConfig
from visiongate.datasets.coco import SPLITS, export_yolo, load_split, read_semantic_mask
from visiongate.datasets.prepare import has_masks, prepare, tree_md5
from visiongate.datasets.splits import assign, parse_ratios

CFG = ValidationConfig(max_quarantine_share=0.2, clip_tolerance=0.02)


def _boxes(out: Path) -> list[tuple[str, list[float]]]:
    """(class name, bbox) of every annotation of every split, sorted."""
    found = []
    for split in SPLITS:
        s = load_split(out / split)
        names = {c["id"]: c["name"] for c in s.categories}
        found += [(names[a["category_id"]], a["bbox"]) for anns in s.annotations.values()
                  for a in anns]
    return sorted(found)


def _expected(sources, n: int) -> list[tuple[str, list[float]]]:
    return sorted((sources.NAMES[c], list(b)) for c, b in sources.SCENE for _ in range(n))


def _images(out: Path) -> dict[str, int]:
    return {s: len(load_split(out / s).images) for s in SPLITS}


def test_yolo_keeps_the_source_splits_and_boxes(tmp_path, sources):
    src = sources.make_yolo(tmp_path / "src", n=3, splits=("train", "val", "test"))
    info = prepare("yolo", src, tmp_path / "out", cfg=CFG)
    assert _images(tmp_path / "out") == {"train": 3, "val": 3, "test": 3}
    assert {Path(i["file_name"]).name for i in load_split(tmp_path / "out" / "val").images} == \
        {"val0.png", "val1.png", "val2.png"}
    assert info["classes"] == ["cat", "dog"] and not info["has_masks"]
    got = _boxes(tmp_path / "out")
    assert [g[0] for g in got] == [e[0] for e in _expected(sources, 9)]
    np.testing.assert_allclose([g[1] for g in got], [e[1] for e in _expected(sources, 9)],
                               atol=1e-3)
    assert not has_masks(tmp_path / "out")


def test_yolo_polygons_give_boxes_and_label_maps(tmp_path, sources):
    src = sources.make_yolo(tmp_path / "src", n=7, polygons=True)
    prepare("yolo", src, tmp_path / "out", cfg=CFG)
    out = tmp_path / "out"
    assert has_masks(out)
    split = load_split(out / "train")
    image = split.images[0]
    anns = split.annotations[image["id"]]
    assert all(len(a["segmentation"][0]) == 8 for a in anns)
    np.testing.assert_allclose(sorted(a["bbox"] for a in anns),
                               sorted(b for _, b in sources.SCENE), atol=1e-3)
    mask = read_semantic_mask(split, image)
    assert mask[6 + 5, 8 + 5] == 1 and mask[20 + 5, 30 + 5] == 2 and mask[0, 63] == 0


def test_round_trip_to_the_yolo_layout_ultralytics_reads(tmp_path, sources):
    from ultralytics.data.utils import img2label_paths

    src = sources.make_yolo(tmp_path / "src", n=7)
    prepare("yolo", src, tmp_path / "prepared", cfg=CFG)
    data_yaml = export_yolo(tmp_path / "prepared", tmp_path / "export")
    images = sorted((tmp_path / "export" / "images").rglob("*.png"))
    assert len(images) == 7
    for image, label in zip(images, img2label_paths([str(p) for p in images])):
        original = (src / "labels" / "train" / (image.stem + ".txt")).read_text().split("\n")
        exported = Path(label).read_text().split("\n")
        np.testing.assert_allclose(
            sorted([float(v) for v in line.split()] for line in exported if line),
            sorted([float(v) for v in line.split()] for line in original if line), atol=1e-5)
    assert "names" in data_yaml.read_text()


def test_coco_per_split_files_renumber_categories(tmp_path, sources):
    src = sources.make_coco(tmp_path / "src", n=2, splits=("train", "val", "test"))
    info = prepare("coco", src, tmp_path / "out", cfg=CFG)
    out = tmp_path / "out"
    assert _images(out) == {"train": 2, "val": 2, "test": 2}
    assert [(c["id"], c["name"]) for c in load_split(out / "val").categories] == \
        [(1, "cat"), (2, "dog")]
    assert _boxes(out) == _expected(sources, 6)
    assert info["has_masks"] and has_masks(out)


def test_coco_rle_segmentation_is_kept(tmp_path, sources):
    from pycocotools import mask as mask_utils

    src = sources.make_coco(tmp_path / "src", n=7)
    path = src / "train" / "instances_train.json"
    coco = json.loads(path.read_text())
    rle = mask_utils.encode(np.asfortranarray((sources.scene_mask(value=1))))
    for ann in coco["annotations"]:
        ann["segmentation"] = {"size": rle["size"], "counts": rle["counts"].decode()}
    path.write_text(json.dumps(coco))
    prepare("coco", src, tmp_path / "out", cfg=CFG)
    split = load_split(tmp_path / "out" / "train")
    ann = split.annotations[1][0]
    assert ann["segmentation"]["counts"] == rle["counts"].decode()
    assert ann["area"] == float(mask_utils.area(rle))


def test_voc_honours_image_sets_and_is_boxes_only(tmp_path, sources):
    src = sources.make_voc(tmp_path / "src", n=6, image_sets={
        "train": ["img0", "img1", "img2"], "val": ["img3", "img4"], "test": ["img5"]})
    info = prepare("voc", src, tmp_path / "out", cfg=CFG)
    out = tmp_path / "out"
    assert _images(out) == {"train": 3, "val": 2, "test": 1}
    assert [Path(i["file_name"]).name for i in load_split(out / "test").images] == ["img5.png"]
    assert _boxes(out) == _expected(sources, 6)
    assert not info["has_masks"] and not has_masks(out)


def test_masks_binary_folder_gives_one_foreground_class(tmp_path, sources):
    src = sources.make_masks(tmp_path / "src", n=7)
    info = prepare("masks", src, tmp_path / "out", cfg=CFG)
    out = tmp_path / "out"
    assert info["classes"] == ["foreground"] and has_masks(out)
    split = load_split(out / "train")
    image = split.images[0]
    mask = read_semantic_mask(split, image)
    np.testing.assert_array_equal(mask, sources.scene_mask(value=1))
    assert sorted(a["bbox"] for a in split.annotations[image["id"]]) == \
        sorted(b for _, b in sources.SCENE)  # one instance per connected component


def test_masks_label_values_with_a_names_file(tmp_path, sources):
    src = tmp_path / "src"
    for k in range(7):
        sources.write_image(src / "images" / f"{k}.jpg", seed=k)
        mask = sources.scene_mask(value=2)
        mask[0:4, 0:4] = 1
        (src / "masks").mkdir(parents=True, exist_ok=True)
        Image.fromarray(mask).save(src / "masks" / f"{k}.png")
    (src / "classes.txt").write_text("background\nroad\ncar\n")
    info = prepare("masks", src, tmp_path / "out", cfg=CFG)
    assert info["classes"] == ["road", "car"]
    split = load_split(tmp_path / "out" / "train")
    assert sorted({a["category_id"] for anns in split.annotations.values() for a in anns}) == [1, 2]


def test_splits_are_seeded_and_exact(tmp_path, sources):
    src = sources.make_yolo(tmp_path / "src", n=20)
    a = prepare("yolo", src, tmp_path / "a", parse_ratios("train=0.5,val=0.25,test=0.25"), seed=3,
                cfg=CFG)
    b = prepare("yolo", src, tmp_path / "b", parse_ratios("train=0.5,val=0.25,test=0.25"), seed=3,
                cfg=CFG)
    assert a["images"] == b["images"] == {"train": 10, "val": 5, "test": 5}
    assert tree_md5(tmp_path / "a") == tree_md5(tmp_path / "b")
    prepare("yolo", src, tmp_path / "c", parse_ratios("train=0.5,val=0.25,test=0.25"), seed=4,
            cfg=CFG)
    assert load_split(tmp_path / "c" / "val").images != load_split(tmp_path / "a" / "val").images


def test_missing_source_splits_are_carved_from_train():
    from visiongate.datasets.formats.base import Item

    items = [Item(Path(f"{k}.png"), f"train/{k}.png", "train") for k in range(16)]
    items += [Item(Path(f"v{k}.png"), f"val/v{k}.png", "val") for k in range(4)]
    out = assign(items, {"train": 0.7, "val": 0.15, "test": 0.15}, seed=0)
    assert len(out["val"]) == 4 and all(i.split == "val" for i in out["val"])
    assert len(out["test"]) == 3 and all(i.split == "train" for i in out["test"])
    assert len(out["train"]) == 13


@pytest.mark.parametrize("text", ["train=0.7,val=0.3", "train=0.5,val=0.3,test=0.3",
                                  "train=a,val=0.5,test=0.5", "dev=0.2,val=0.4,test=0.4"])
def test_bad_split_ratios_are_named(text):
    with pytest.raises(ValueError, match="--split"):
        parse_ratios(text)


def test_coco128_seg_with_the_yolo_importer(tmp_path, shared_data):
    src = shared_data("coco128-seg")
    before = tree_md5(src)
    images = {p.stem for p in (src / "images" / "train2017").iterdir()}
    labels = [p for p in (src / "labels" / "train2017").glob("*.txt") if p.stem in images]
    polygons = sum(1 for p in labels for line in p.read_text().splitlines() if line.strip())
    info = prepare("yolo", src, tmp_path / "out", cfg=CFG)
    assert sum(info["images"].values()) == 128
    anns = [a for s in SPLITS for anns in load_split(tmp_path / "out" / s).annotations.values()
            for a in anns]
    tiny = [line for line in (tmp_path / "out" / "quarantine.csv").read_text().splitlines()
            if ",tiny_box," in line]
    assert len(tiny) == 3                 # objects under 2 px a side (validation.min_box_px)
    assert len(anns) == polygons - len(tiny) == sum(info["objects"].values())
    assert all(isinstance(a["segmentation"], list) for a in anns)
    assert len(info["classes"]) == 80 and info["classes"][0] == "person"
    assert info["quarantine"]["quarantined"] == 0 and tree_md5(src) == before


def test_isbi_membrane_with_the_masks_importer(tmp_path, shared_data):
    src = shared_data("isbi-membrane")
    prepare("masks", src, tmp_path / "out", cfg=CFG)
    pairs = 0
    for s in SPLITS:
        split = load_split(tmp_path / "out" / s)
        for image in split.images:
            mask = read_semantic_mask(split, image)  # checks the size against the image
            assert set(np.unique(mask)) <= {0, 1}
            pairs += 1
    assert pairs == 30


def test_voc_difficult_objects_are_ignore_regions_as_pycocotools_scores_them(tmp_path):
    """A VOC `difficult` object becomes COCO iscrowd: a detector that misses it loses
    nothing, one that finds it gains nothing — equal to pycocotools on the same files."""
    import xml.etree.ElementTree as ET

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from visiongate.metrics import evaluate_coco_files

    voc = tmp_path / "src" / "VOC"
    (voc / "Annotations").mkdir(parents=True)
    (voc / "JPEGImages").mkdir()
    for k in range(6):
        Image.new("RGB", (100, 80), (k * 30, 90, 90)).save(voc / "JPEGImages" / f"{k}.png")
        ann = ET.fromstring(f"<annotation><filename>{k}.png</filename><size><width>100</width>"
                            "<height>80</height><depth>3</depth></size></annotation>")
        for corners, difficult in (((11, 11, 40, 40), "0"), ((61, 21, 90, 60), "1")):
            obj = ET.SubElement(ann, "object")
            ET.SubElement(obj, "name").text = "cat"
            ET.SubElement(obj, "difficult").text = difficult
            box = ET.SubElement(obj, "bndbox")
            for tag, v in zip(("xmin", "ymin", "xmax", "ymax"), corners, strict=True):
                ET.SubElement(box, tag).text = str(v)
        (voc / "Annotations" / f"{k}.xml").write_text(ET.tostring(ann, encoding="unicode"))
    prepare("voc", tmp_path / "src", tmp_path / "out")
    test = load_split(tmp_path / "out" / "test")
    anns = [a for image in test.images for a in test.annotations[image["id"]]]
    half = len(anns) // 2
    assert half >= 1 and sorted(a["iscrowd"] for a in anns) == [0] * half + [1] * half
    gt = tmp_path / "out" / "test" / "annotations.json"

    def score(predicted_boxes) -> tuple[float, float]:
        results = [{"image_id": image["id"], "category_id": 1, "bbox": box, "score": 0.9}
                   for image in test.images for box in predicted_boxes]
        (tmp_path / "pred.json").write_text(json.dumps(results))
        ours = evaluate_coco_files(gt, tmp_path / "pred.json")["map50"]
        coco = COCO(str(gt))
        ref = COCOeval(coco, coco.loadRes(str(tmp_path / "pred.json")), "bbox")
        ref.evaluate()
        ref.accumulate()
        ref.summarize()
        return ours, float(ref.stats[1])

    normal, difficult = [10, 10, 30, 30], [60, 20, 30, 40]
    for boxes in ([normal], [normal, difficult]):       # missed, or found: AP 1 either way
        ours, ref = score(boxes)
        assert ours == pytest.approx(ref, abs=1e-6) and ours == pytest.approx(1.0)
    ours, ref = score([difficult])                      # only the ignore region: no hit
    assert ours == pytest.approx(ref, abs=1e-6) and ours == pytest.approx(0.0)


def test_the_same_photo_in_train_and_test_is_a_split_leak(tmp_path, sources):
    """Boxes datasets too: one copy kept (the held-out one), the others reported."""
    src = sources.make_yolo(tmp_path / "src", n=4, splits=("train", "val", "test"))
    images, labels = src / "images", src / "labels"
    for name in ("leak.png", "again.png"):   # test0's photo under train, twice
        (images / "train" / name).write_bytes((images / "test" / "test0.png").read_bytes())
        (labels / "train" / name.replace(".png", ".txt")).write_text(
            (labels / "test" / "test0.txt").read_text())
    prepare("yolo", src, tmp_path / "out", cfg=CFG)
    assert _images(tmp_path / "out") == {"train": 4, "val": 4, "test": 4}
    rows = [line.split(",")[:2] for line in
            (tmp_path / "out" / "quarantine.csv").read_text().splitlines()[1:]]
    assert sorted(rows) == [["images/train/again.png", "split_leak"],
                            ["images/train/leak.png", "split_leak"]]
    test_names = {Path(i["file_name"]).name for i in load_split(tmp_path / "out" / "test").images}
    assert "test0.png" in test_names


def test_images_no_coco_json_lists_are_reported(tmp_path, sources):
    src = sources.make_coco(tmp_path / "src", n=6)
    sources.write_image(src / "train" / "images" / "stray.png", seed=55)
    sources.write_image(src / "train" / "masks" / "train0.png", seed=56)  # not an image of it
    prepare("coco", src, tmp_path / "out", cfg=CFG)
    rows = [line.split(",")[:2] for line in
            (tmp_path / "out" / "quarantine.csv").read_text().splitlines()[1:]]
    assert rows == [["train/images/stray.png", "missing_label"]]
    assert sum(_images(tmp_path / "out").values()) == 6
