"""Image-label importers (`--format folders` / `csv`) through `prepare`, the function the
`prepare-<name>` DVC stage runs: canonical `labels`, class lists, quarantine kinds, the
source untouched; plus image-label stats."""

from __future__ import annotations

import csv
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from flows import data_cli
from visiongate.config import ValidationConfig
from visiongate.datasets import formats
from visiongate.datasets.coco import SPLITS, load_split
from visiongate.datasets.formats import base
from visiongate.datasets.image_labels import has_image_labels, labels_of
from visiongate.datasets.prepare import format_summary, prepare, tree_md5
from visiongate.datasets.stats import dataset_stats, format_stats, write_stat_plots
from visiongate.datasets.validate import read_quarantine
from visiongate.errors import DataError

CFG = ValidationConfig(max_quarantine_share=1.0)


def png(path: Path, seed: int, size: int = 12) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (size, size, 3), np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def labelled(out: Path) -> dict[str, tuple[str, list[str]]]:
    """{image file name: (split, [class names])} over every split of a prepared dataset."""
    found = {}
    for name in SPLITS:
        split = load_split(out / name)
        assert has_image_labels(split) and not any(split.annotations.values())
        for image in split.images:
            names = [split.class_names[k - 1] for k in labels_of(split, image, True)]
            found[Path(image["file_name"]).name] = (name, names)
    return found


def kinds(out: Path) -> dict[str, list[str]]:
    by_kind: dict[str, list[str]] = {}
    for issue in read_quarantine(out / "quarantine.csv"):
        by_kind.setdefault(issue.kind, []).append(issue.file)
    return by_kind


def test_cli_formats_are_the_readers():
    assert data_cli.FORMATS == formats.FORMATS
    assert {"folders", "csv"} <= set(formats.FORMATS)


def test_folders_with_splits_and_bad_items(tmp_path):
    src = tmp_path / "src"
    seed = 0
    for split, counts in {"train": {"cat": 4, "dog": 4}, "val": {"cat": 2, "dog": 2},
                          "test": {"cat": 2, "dog": 2}}.items():
        for klass, n in counts.items():
            for i in range(n):
                seed += 1
                png(src / split / klass / f"{split[:2]}{klass}{i}.png", seed)
    (src / "train" / "cat" / "broken.jpg").write_text("not an image")
    (src / "train" / "bird").mkdir()                              # empty class folder
    png(src / "train" / "loose.png", 99)                          # not in a class folder
    dup = (src / "train" / "cat" / "trcat0.png").read_bytes()
    (src / "train" / "dog" / "twin.png").write_bytes(dup)         # same bytes, other class
    (src / "train" / "cat" / "again.png").write_bytes(dup)        # ... and same class
    (src / "test" / "cat" / "leak.png").write_bytes(
        (src / "train" / "cat" / "trcat1.png").read_bytes())        # train image in test
    os.symlink(src / "train" / "dog" / "trdog0.png", src / "train" / "dog" / "link.png")
    before = tree_md5(src)

    info = prepare("folders", src, tmp_path / "out", cfg=CFG)

    assert tree_md5(src) == before
    assert info["classes"] == ["cat", "dog"] and info["image_labels"] and not info["has_masks"]
    got = labelled(tmp_path / "out")
    assert got["trdog1.png"] == ("train", ["dog"]) and got["vacat1.png"] == ("val", ["cat"])
    assert got["leak.png"] == ("test", ["cat"]) and "trcat1.png" not in got
    assert {"trcat0.png", "twin.png", "again.png", "broken.jpg", "link.png"}.isdisjoint(got)
    assert info["images"] == {"train": 6, "val": 4, "test": 5}
    found = kinds(tmp_path / "out")
    assert found[base.NOT_IMAGE] == ["train/cat/broken.jpg"]
    assert found[base.EMPTY_CLASS] == ["bird"]
    assert found[base.MISSING_LABEL] == ["train/loose.png"]
    assert found[base.SYMLINK] == ["train/dog/link.png"]
    assert sorted(found[base.CONFLICTING_LABELS]) == [
        "train/cat/again.png", "train/cat/trcat0.png", "train/dog/twin.png"]
    assert found[base.SPLIT_LEAK] == ["train/cat/trcat1.png"]
    assert "image labels" in format_summary(info, tmp_path / "out")


def test_folders_without_splits_are_split_by_the_seeded_splitter(tmp_path):
    src = tmp_path / "src"
    for k in range(20):
        png(src / ("a" if k % 2 else "test_tube") / f"{k}.png", k)
    info = prepare("folders", src, tmp_path / "out", cfg=CFG)
    assert info["images"] == {"train": 14, "val": 3, "test": 3}
    assert info["classes"] == ["a", "test_tube"]          # a class, not a split folder
    assert not (tmp_path / "out" / "quarantine.csv").read_text().strip().count("\n")
    again = prepare("folders", src, tmp_path / "again", cfg=CFG)
    assert labelled(tmp_path / "out") == labelled(tmp_path / "again") and info == again


def write_csv(path: Path, rows: list[list[str]]) -> None:
    with path.open("w", newline="") as f:
        csv.writer(f).writerows(rows)


def test_csv_multi_label_with_hostile_rows(tmp_path):
    src, outside = tmp_path / "src", png(tmp_path / "outside.png", 50)
    for k in range(9):
        png(src / "img" / f"{k}.png", k)
    (src / "img" / "text.png").write_text("hello")
    os.symlink(outside, src / "img" / "link.png")
    png(src / "img" / "unlisted.png", 60)
    rows = [["image", "labels", "split"],
            *[[f"img/{k}.png", "cat;dog" if k % 3 == 0 else "cat", ""] for k in range(6)],
            ["img/6.png", "dog", "val"], ["img/7.png", "dog", "test"],
            ["img/8.png", "", "train"],                   # no label
            ["img/text.png", "cat", ""],                   # not an image
            ["img/link.png", "cat", ""],                   # symlink
            ["../outside.png", "cat", ""], [str(outside), "dog", ""],
            ["img/1.png", "dog", ""],                      # same image, other label
            ["img/2.png", "cat", ""],                      # same image, same label
            ["img/3.png", "cat;dog", "bogus"],             # malformed split
            ["img/4.png", "cat"]]                          # malformed: 2 fields
    write_csv(src / "labels.csv", rows)
    before = tree_md5(src)

    info = prepare("csv", src, tmp_path / "out", cfg=CFG)

    assert tree_md5(src) == before
    assert info["classes"] == ["cat", "dog"] and info["image_labels"]
    got = labelled(tmp_path / "out")
    assert got["0.png"][1] == ["cat", "dog"] and got["2.png"][1] == ["cat"]
    assert got["6.png"] == ("val", ["dog"]) and got["7.png"] == ("test", ["dog"])
    assert {"1.png", "8.png", "text.png", "link.png", "unlisted.png"}.isdisjoint(got)
    found = kinds(tmp_path / "out")
    assert found[base.OUTSIDE] == ["labels.csv", "labels.csv"]
    assert found[base.CONFLICTING_LABELS] == ["img/1.png"]
    assert found[base.DUPLICATE_IMAGE] == ["img/2.png"]
    assert found[base.NOT_IMAGE] == ["img/text.png"]
    assert set(found[base.SYMLINK]) == {"img/link.png"}
    assert sorted(found[base.MISSING_LABEL]) == ["img/8.png", "img/unlisted.png"]
    assert found[base.MALFORMED] == ["labels.csv", "labels.csv"]
    assert not (tmp_path / "outside.png.copied").exists()


def test_csv_names_file_unknown_class_and_kept_empty_class(tmp_path):
    src = tmp_path / "src"
    for k in range(8):
        png(src / f"{k}.png", k)
    (src / "classes.txt").write_text("cat\ndog\nbird\n")
    write_csv(src / "train.csv", [["file", "label"], *[[f"{k}.png", "dog" if k % 2 else "cat"]
                                                        for k in range(7)], ["7.png", "cow"]])
    info = prepare("csv", src, tmp_path / "out", cfg=CFG)
    assert info["classes"] == ["cat", "dog", "bird"]          # the names file's order
    found = kinds(tmp_path / "out")
    assert found[base.UNKNOWN_CLASS] == ["7.png"] and found[base.EMPTY_CLASS] == ["bird"]
    lines = read_quarantine(tmp_path / "out" / "quarantine.csv")
    assert [i.action for i in lines if i.kind == base.EMPTY_CLASS] == [base.KEPT]


def test_csv_one_hot_columns_and_a_dropped_empty_class(tmp_path):
    src = tmp_path / "src"
    for k in range(6):
        png(src / f"{k}.png", k)
    rows = [["path", "zebra", "ant", "bee"],
            *[[f"{k}.png", "1", "0" if k % 2 else "1", "0"] for k in range(5)],
            ["5.png", "1", "2", "0"]]                                  # not 0/1
    write_csv(src / "labels.csv", rows)
    info = prepare("csv", src, tmp_path / "out", cfg=CFG)
    assert info["classes"] == ["ant", "zebra"]                         # bee: no image
    got = labelled(tmp_path / "out")
    assert got["0.png"][1] == ["ant", "zebra"] and got["1.png"][1] == ["zebra"]
    found = kinds(tmp_path / "out")
    assert found[base.EMPTY_CLASS] == ["bee"] and found[base.MALFORMED] == ["labels.csv"]
    stats = dataset_stats(tmp_path / "out")
    assert stats["image_labels"]
    total = Counter()
    for s in stats["splits"].values():
        total.update(s["image_labels"])
    assert total == {"zebra": 5, "ant": 3}
    assert sum(s["multi_label_images"] for s in stats["splits"].values()) == 3
    assert "images per class: " in format_stats(stats)
    assert [p.name for p in write_stat_plots(stats, tmp_path / "plots")] == [
        "class_histogram.png"]


@pytest.mark.parametrize("files, message", [
    ({}, "no labels.csv"),
    ({"a.csv": "image,label\n", "b.csv": "image,label\n"}, "2 CSV files"),
    ({"labels.csv": "name,label\nx.png,cat\n"}, "no image column"),
    ({"labels.csv": "image,split\nx.png,train\n"}, "no label column"),
    ({"labels.csv": ""}, "no header row"),
])
def test_unusable_csv_files_are_one_line_errors(tmp_path, files, message):
    src = tmp_path / "src"
    png(src / "x.png", 1)
    for name, text in files.items():
        (src / name).write_text(text)
    with pytest.raises(DataError, match=message) as err:
        formats.read_source("csv", src)
    assert "\n" not in str(err.value)
