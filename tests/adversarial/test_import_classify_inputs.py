"""Hostile image-label sources (`--format folders` / `csv`): every bound is a one-line error
or a capped set of quarantine lines, found quickly; links are never followed; the source
is never changed."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from visiongate.config import ValidationConfig
from visiongate.datasets import safe_load
from visiongate.datasets.formats import base, csv_labels, read_source
from visiongate.datasets.prepare import tree_md5
from visiongate.datasets.validate import validate
from visiongate.errors import DataError

CFG = ValidationConfig(max_quarantine_share=1.0)


def png(path: Path, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (8, 8, 3), np.uint8)).save(path)
    return path


def issues_of(fmt: str, src: Path):
    before = tree_md5(src)
    with safe_load.pixel_limit(CFG.max_pixels):
        source = read_source(fmt, src)
        kept, issues = validate(source, CFG.clip_tolerance)
    assert tree_md5(src) == before
    return source, kept, issues


def refused(src: Path, message: str, seconds: float = 2.0) -> None:
    start = time.perf_counter()
    with pytest.raises(DataError, match=message) as err:
        read_source("csv", src)
    assert time.perf_counter() - start < seconds
    assert "\n" not in str(err.value) and len(str(err.value)) < 300


def test_a_huge_csv_is_refused_by_its_size_before_reading(tmp_path):
    src = tmp_path / "src"
    png(src / "a.png")
    with (src / "labels.csv").open("wb") as f:
        f.truncate(csv_labels.MAX_CSV_BYTES + 1)  # sparse: costs no disk
    refused(src, "bigger than 128 MiB", seconds=0.5)


def test_a_csv_with_too_many_rows_is_refused_before_parsing(tmp_path):
    src = tmp_path / "src"
    png(src / "a.png")
    (src / "labels.csv").write_bytes(b"image,label\n" + b"a\n" * (csv_labels.MAX_ROWS + 1))
    refused(src, "more than 2,000,000 rows")


def test_rows_that_multiply_lines_are_capped(tmp_path):
    src = tmp_path / "src"
    png(src / "a.png")
    n = csv_labels.MAX_LINES_PER_KIND + 500
    rows = ["image,label", "a.png,cat"]
    rows += [f"../x{k}.png,cat" for k in range(n)]           # outside
    rows += [f"missing{k}.png,cat" for k in range(n)]        # not there
    rows += [f"a{k}.png" for k in range(n)]                  # malformed
    (src / "labels.csv").write_text("\n".join(rows) + "\n")
    start = time.perf_counter()
    _, kept, issues = issues_of("csv", src)
    assert time.perf_counter() - start < 3
    assert [item.key for item in kept] == ["a.png"]
    for kind in (base.OUTSIDE, base.MISSING_IMAGE, base.MALFORMED):
        lines = [i for i in issues if i.kind == kind]
        assert len(lines) == csv_labels.MAX_LINES_PER_KIND + 1
        assert lines[-1].detail == "500 more lines of this kind, not listed"


def test_long_fields_nul_bytes_and_bad_values_are_malformed_rows(tmp_path):
    src = tmp_path / "src"
    for k in range(3):
        png(src / f"{k}.png", k)
    text = ("image,cat,dog\n0.png,1,0\n"
            f"1.png,{'1' * 200_000},0\n"                    # past csv's own field limit
            f"2.png,{'0' * (csv_labels.MAX_FIELD_CHARS + 1)},1\n"
            "2\x00.png,1,0\n"
            '"2.png,1,0\n')                                  # an unclosed quote
    (src / "labels.csv").write_text(text)
    _, kept, issues = issues_of("csv", src)
    assert [item.key for item in kept] == ["0.png"]
    malformed = [i for i in issues if i.kind == base.MALFORMED]
    assert len(malformed) == 4 and all(len(i.detail) < 200 for i in malformed)


def test_a_linked_csv_or_class_folder_is_never_followed(tmp_path):
    outside = tmp_path / "outside"
    png(outside / "secret.png", 9)
    (outside / "labels.csv").write_text("image,label\nsecret.png,cat\n")
    src = tmp_path / "src"
    png(src / "a.png")
    os.symlink(outside / "labels.csv", src / "labels.csv")
    refused(src, "no labels.csv")

    folders = tmp_path / "folders"
    png(folders / "cat" / "a.png", 1)
    png(folders / "dog" / "b.png", 2)
    os.symlink(outside, folders / "linked")
    source, kept, issues = issues_of("folders", folders)
    assert source.classes == ["cat", "dog"]
    assert {i.file for i in issues if i.kind == base.SYMLINK} == {"linked"}
    assert all("secret" not in str(item.image) for item in kept)


def test_class_names_from_a_csv_are_bounded(tmp_path):
    src = tmp_path / "src"
    png(src / "a.png")
    png(src / "b.png", 1)
    long = "x" * (safe_load.MAX_NAME_CHARS + 1)
    (src / "labels.csv").write_text(f"image,labels\na.png,cat\nb.png,cat;{long}\n")
    source, kept, issues = issues_of("csv", src)
    assert source.classes == ["cat"] and [item.key for item in kept] == ["a.png"]
    assert [i.kind for i in issues if i.file == "labels.csv"] == [base.MALFORMED]


@pytest.mark.integration
def test_cli_imports_a_csv_source_and_describes_it(tmp_path, capfd):
    """`visiongate data import --format csv` end to end (DVC stage, raw copy), then stats."""
    import import_sandbox as sandbox

    from flows.cli import main

    projects = sandbox.load(sandbox.TESTS / "integration" / "conftest.py", "classify_projects")
    root = projects.make_project(tmp_path / "project", {
        **projects.TINY_PARAMS, "validation": {"max_quarantine_share": 0.5}})
    src = tmp_path / "src"
    for k in range(10):
        png(src / "img" / f"{k}.png", k)
    rows = [f"img/{k}.png,{'cat;dog' if k % 3 == 0 else 'cat' if k % 2 else 'dog'}"
            for k in range(10)]
    (src / "labels.csv").write_text("image,labels\n" + "\n".join(rows) + "\n../x.png,cat\n")
    before = tree_md5(src)
    assert main(["data", "import", "--format", "csv", str(src), "--name", "pets",
                 "--root", str(root)]) == 0
    assert tree_md5(src) == before
    out = capfd.readouterr().out
    assert "image labels, 2 classes" in out and "outside_source 1" in out
    assert main(["data", "stats", "pets", "--root", str(root)]) == 0
    assert "images per class: cat " in capfd.readouterr().out
    assert (root / ".cache" / "stats" / "pets" / "class_histogram.png").is_file()
