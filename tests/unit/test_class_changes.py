"""Class lists that change: ids kept across re-imports (visiongate.datasets.class_ids), the
champion compared on what both models know (visiongate.class_changes, the gate)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from visiongate.class_changes import Compared, compare, comparison_views
from visiongate.config import GateConfig
from visiongate.datasets import class_ids
from visiongate.datasets.coco import load_split
from visiongate.datasets.formats.base import Item, Obj, Source
from visiongate.errors import DataError
from visiongate.gates import evaluate_gate


def _source(classes: list[str], objects: list[list[int]]) -> tuple[Source, list[Item]]:
    items = [Item(Path(f"{k}.png"), f"{k}.png", objects=[Obj(c, [0, 0, 4, 4]) for c in cats])
             for k, cats in enumerate(objects)]
    return Source(Path("."), "yolo", list(classes), items), items


def test_a_reimport_keeps_the_ids_of_the_classes_that_stay_and_appends_new_ones():
    # the new export lists its classes in another order and adds "bird"
    source, items = _source(["dog", "bird", "cat"], [[1, 2], [3], [2, 3]])
    changes = class_ids.keep_ids(source, items, ["cat", "dog"])
    assert source.classes == ["cat", "dog", "bird"]
    names = [[source.classes[o.category - 1] for o in item.objects] for item in items]
    assert names == [["dog", "bird"], ["cat"], ["bird", "cat"]]   # every object still itself
    assert changes == {"added": ["bird"], "dropped": [], "renumbered": []}
    assert class_ids.describe(changes) == "classes since the last import: added bird"


def test_dropping_a_class_moves_the_ids_after_it_and_says_so():
    source, items = _source(["a", "c"], [[1, 2]])
    items[0].labels = [1, 2]
    source.mask_values = {255: 2}
    changes = class_ids.keep_ids(source, items, ["a", "b", "c"])
    assert source.classes == ["a", "c"] and [o.category for o in items[0].objects] == [1, 2]
    assert changes == {"added": [], "dropped": ["b"], "renumbered": [["c", 3, 2]]}
    assert "ids moved: c 3→2" in class_ids.describe(changes)
    assert "will not promote automatically" in class_ids.describe(changes)


def test_the_reference_file_is_read_bounded_and_checked(tmp_path):
    ref = tmp_path / "classes.txt"
    ref.write_text("cat\ndog\n\n")
    assert class_ids.read_reference(ref) == ["cat", "dog"]
    ref.write_text("cat\ncat\n")
    with pytest.raises(DataError, match="listed twice"):
        class_ids.read_reference(ref)


def test_compare_names_added_dropped_and_renumbered():
    change = compare(["a", "b", "c"], ["a", "c", "d"])
    assert change.added == ("d",) and change.dropped == ("b",)
    assert change.renumbered == (("c", 3, 2),)
    same = compare(["a", "b"], ["a", "b"])
    assert not same.changed
    assert compare(["a", "b"], ["a", "b", "x"]).renumbered == ()


def _split(root: Path, classes: list[str], objects: list[list[int]]) -> Path:
    images, anns = [], []
    for k, cats in enumerate(objects, start=1):
        (root / "images").mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "images" / f"{k}.png")
        images.append({"id": k, "file_name": f"images/{k}.png", "width": 8, "height": 8})
        anns += [{"id": len(anns) + 1, "image_id": k, "category_id": c, "bbox": [0, 0, 4, 4],
                  "area": 16, "iscrowd": 0} for c in cats]
    (root / "annotations.json").write_text(json.dumps({
        "images": images, "annotations": anns,
        "categories": [{"id": k, "name": n} for k, n in enumerate(classes, start=1)]}))
    return root


def test_the_comparison_view_keeps_images_holding_only_classes_both_know(tmp_path):
    # candidate: cat, dog, bird (new); champion: cat, dog, fish (gone since)
    split = _split(tmp_path / "test", ["cat", "dog", "bird"], [[1], [1, 3], [2], [], [3]])
    mine, theirs, kept, total = comparison_views(split, ("cat", "dog", "fish"), tmp_path / "v")
    assert (kept, total) == (3, 5)
    ours, champions = load_split(mine), load_split(theirs)
    assert ours.class_names == ("cat", "dog", "bird")          # each model's own list
    assert champions.class_names == ("cat", "dog", "fish")
    assert [im["id"] for im in champions.images] == [1, 3, 4]   # no bird anywhere
    assert sorted(a["category_id"] for a in champions.coco_dict()["annotations"]) == [1, 2]
    assert (theirs / "images" / "3.png").is_file()
    assert json.loads((split / "annotations.json").read_text())["images"][1]["id"] == 2  # untouched
    with pytest.raises(DataError, match="no test image"):
        comparison_views(_split(tmp_path / "t2", ["cat", "bird"], [[2]]), ("cat",), tmp_path / "w")


def test_the_gate_judges_non_regression_on_the_comparison_view():
    cfg = GateConfig(floors={"map50": 0.3}, max_drop={"map50": 0.02})
    champion = {"map50": 0.80}
    # a hard new class pulls the candidate's overall mAP down; on what both know it is better
    candidate = {"map50": 0.60, "ap/bird": 0.05}
    note = "new since champion v1: bird (AP shown; no non-regression check on them)"
    result = evaluate_gate(candidate, champion, cfg, compared=Compared({"map50": 0.82}, note))
    assert result.passed, result.reasons
    classes = next(c for c in result.checks if c.name == "classes")
    assert classes.passed and "bird" in classes.detail
    assert not evaluate_gate(candidate, champion, cfg).passed     # without the view: refused
    worse = evaluate_gate({"map50": 0.9}, champion, cfg, compared=Compared({"map50": 0.7}, note))
    assert not worse.passed and "0.700 dropped 0.100 vs champion 0.800" in worse.reasons[0]
