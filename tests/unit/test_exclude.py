"""The exclusion list (visiongate.datasets.exclude), the view without its entries
(exclude_view, crops.model_data) and the suspects reader (visiongate.review)."""

import json
import shutil

import pytest

from visiongate import review
from visiongate.config import SynthConfig
from visiongate.datasets import exclude
from visiongate.datasets.coco import load_split
from visiongate.datasets.crops import model_data
from visiongate.datasets.exclude import Exclusion
from visiongate.datasets.prepare import tree_md5
from visiongate.datasets.synth import generate
from visiongate.errors import DataError, NotFound
from visiongate.lineage import IDENTITY, identity


@pytest.fixture
def shapes(tmp_path):
    """A prepared dataset with masks (the synthetic shapes)."""
    root = tmp_path / "prepared" / "shapes"
    generate(SynthConfig(seed=2, image_size=64, splits={"train": 4, "val": 2, "test": 2}), root)
    return root


@pytest.fixture
def boxes(shapes):
    """The same dataset with boxes only (no masks/): exclusions per annotation."""
    for split in ("train", "val", "test"):
        shutil.rmtree(shapes / split / "masks")
    return shapes


def _two_objects(root, split="train"):
    """(file_name, [annotation ids]) of an image of the split with at least two objects."""
    s = load_split(root / split)
    return next((i["file_name"], [a["id"] for a in s.annotations[i["id"]]])
                for i in s.images if len(s.annotations[i["id"]]) >= 2)


def test_items_parse_and_hostile_ones_are_refused():
    e = exclude.parse_item("train/images/000012.png#57", "a square")
    assert (e.split, e.file, e.annotation, e.reason) == ("train", "images/000012.png", 57,
                                                          "a square")
    assert exclude.parse_item("val/images/a.png").annotation is None
    for item, message in [("../x", "expected train or val"),
                          ("train/../x.png", r"'\.\.'"),
                          ("train/images/../../../etc/passwd", r"'\.\.'"),
                          ("train//etc/passwd", "an absolute path"),
                          ("train/C:/x.png", "an absolute path"),
                          ("train/images\\a.png", "backslash"),
                          ("train/images/a\x1b[2J.png", "control"),
                          ("train/images/a.png#-1", "annotation"),
                          ("train/images/a.png#1e3", "annotation"),
                          ("x.png", "SPLIT/FILE"),
                          ("test/images/a.png", "test split is the pinned yardstick")]:
        with pytest.raises(DataError, match=message):
            exclude.parse_item(item, "why")
    with pytest.raises(DataError, match="one line"):
        exclude.parse_item("train/images/a.png", "two\nlines")


def test_the_list_round_trips_deduped_and_sorted(tmp_path):
    path = tmp_path / "exclude" / "shapes.csv"
    entries = [Exclusion("val", "images/b.png", None, "blurry, wrong"),
               Exclusion("train", "images/a.png", 3, 'says "circle"'),
               Exclusion("train", "images/a.png", 3, "again")]
    exclude.write_list(path, entries)
    assert exclude.read_list(path) == entries[1::-1]
    first = path.read_bytes()
    exclude.write_list(path, list(reversed(entries[:2])))  # same entries, same bytes (md5)
    assert path.read_bytes() == first
    assert exclude.read_list(tmp_path / "none.csv") == []
    assert exclude.remove(entries[:2], "val/images/b.png") == entries[1:2]
    with pytest.raises(NotFound, match="not in the exclusion list"):
        exclude.remove(entries[:2], "val/images/c.png")


@pytest.mark.parametrize("text, message", [
    ("file,split\n", "the header must be"),
    ("split,file,annotation,reason\ntrain,/etc/passwd,,x\n", "line 2: .*absolute"),
    ("split,file,annotation,reason\ntrain,a.png,,x\ntest,a.png,,x\n", "line 3: .*test split"),
    ("split,file,annotation,reason\ntrain,a.png,x\n", "line 2: expected 4 fields"),
    ("split,file,annotation,reason\ntrain,../../x.png,,x\n", r"line 2: .*'\.\.'"),
])
def test_a_hostile_list_is_a_clear_error(tmp_path, text, message):
    path = tmp_path / "shapes.csv"
    path.write_text(text)
    with pytest.raises(DataError, match=message):
        exclude.read_list(path)


def test_an_oversized_or_linked_list_is_refused_unread(tmp_path, monkeypatch):
    path = tmp_path / "shapes.csv"
    path.write_text("split,file,annotation,reason\n" + "train,a.png,,x\n" * 10)
    monkeypatch.setattr(exclude, "MAX_BYTES", 64)
    with pytest.raises(DataError, match="bigger than"):
        exclude.read_list(path)
    link = tmp_path / "link.csv"
    link.symlink_to(path)
    with pytest.raises(DataError, match="symbolic link"):
        exclude.read_list(link)


def test_entries_must_name_an_image_and_annotation_of_the_prepared_split(boxes):
    file, ids = _two_objects(boxes)
    exclude.check_entries(boxes, [Exclusion("train", file, ids[0])])
    for entry, message in [(Exclusion("train", "images/999.png", None), "no such image"),
                           (Exclusion("val", "images/000003.png", None), "no such image"),
                           (Exclusion("train", file, 99999), "no annotation 99999")]:
        with pytest.raises(DataError, match=message):
            exclude.check_entries(boxes, [entry])


def test_the_view_lacks_the_excluded_annotation_and_keeps_everything_else(boxes, tmp_path):
    before = tree_md5(boxes)
    file, ids = _two_objects(boxes)
    listed = tmp_path / "exclude.csv"
    exclude.write_list(listed, [Exclusion("train", file, ids[0], "a square, not a circle")])
    view = model_data(boxes, tmp_path / "views", "image", listed)
    assert view.parent == tmp_path / "views" and view.name.startswith("shapes-image-excl-")
    assert tree_md5(boxes) == before                               # the source only read
    source, seen = load_split(boxes / "train"), load_split(view / "train")
    assert [i["file_name"] for i in seen.images] == [i["file_name"] for i in source.images]
    kept = [a for anns in source.annotations.values() for a in anns if a["id"] != ids[0]]
    assert [a for anns in seen.annotations.values() for a in anns] == kept
    for split in ("val", "test"):                                    # untouched splits
        assert tree_md5(view / split) == tree_md5(boxes / split)
    assert (view / "train" / file).read_bytes() == (boxes / "train" / file).read_bytes()
    assert model_data(boxes, tmp_path / "views", "image", listed) == view  # written once


def test_with_masks_an_excluded_annotation_drops_its_whole_image(shapes, tmp_path):
    file, ids = _two_objects(shapes)
    listed = tmp_path / "exclude.csv"
    exclude.write_list(listed, [Exclusion("train", file, ids[0], "wrong class")])
    view = model_data(shapes, tmp_path / "views", "image", listed)
    seen = load_split(view / "train")
    assert file not in [i["file_name"] for i in seen.images]
    assert len(seen.images) == len(load_split(shapes / "train").images) - 1
    assert not (view / "train" / file).exists()
    assert not (view / "train" / "masks" / file.replace("images/", "")).exists()
    assert exclude.quarantine_lines(exclude.read_list(listed), masks=True)[0][:2] == \
        (f"train/{file}", "excluded_suspect")


def test_no_list_or_an_empty_list_reads_the_prepared_dataset_itself(shapes, tmp_path):
    listed = tmp_path / "exclude.csv"
    assert model_data(shapes, tmp_path / "views", "image", listed) == shapes   # no file
    exclude.write_list(listed, [])
    assert model_data(shapes, tmp_path / "views", "image", listed) == shapes   # no entries
    assert not (tmp_path / "views").exists()


def test_crops_are_cut_after_the_exclusions(boxes, tmp_path):
    file, ids = _two_objects(boxes)
    listed = tmp_path / "exclude.csv"
    exclude.write_list(listed, [Exclusion("train", file, ids[0], "x")])
    crops = model_data(boxes, tmp_path / "views", "crops", listed)
    sources = [i["source"] for i in load_split(crops / "train").images]
    assert {"file_name": file, "annotation": ids[0]} not in sources
    assert {"file_name": file, "annotation": ids[1]} in sources


def test_suspects_are_read_most_suspect_first_and_hostile_rows_refused(tmp_path):
    path = tmp_path / "suspects.csv"
    path.write_text("split,file,annotation,kind,score,detail,model_box\n"
                    "train,images/000001.png,4,swapped_class,0.30,circle? \x1b[31mred,\n"
                    "val,images/000002.png,,missing_box,0.05,an object without a box,1 2 3 4\n")
    rows = review.read_suspects(path)
    assert [r.item for r in rows] == ["val/images/000002.png", "train/images/000001.png#4"]
    table = review.table(rows)
    assert "\x1b" not in table and "missing_box" in table.splitlines()[1]
    assert review.exclusions(rows, 1, "abc")[0].reason == "missing_box (score 0.050, run abc)"
    for bad, message in [("test,images/a.png,,missing_box,0.1,x", "expected train or val"),
                         ("train,/etc/passwd,,missing_box,0.1,x", "absolute"),
                         ("train,images/a.png,,missing_box,nan,x", r"\[0, 1\]"),
                         ("train,images/a.png,,Bad Kind,0.1,x", "kind")]:
        path.write_text("split,file,annotation,kind,score,detail\n" + bad + "\n")
        with pytest.raises(DataError, match=f"line 2: .*{message}"):
            review.read_suspects(path)


def test_identity_says_none_for_a_lineage_without_an_exclusion_list():
    lineage = {k: "x" for k in IDENTITY if k != "data.md5.exclude"}
    assert identity(lineage)["data.md5.exclude"] is None
    assert identity({**lineage, "data.md5.exclude": "m"})["data.md5.exclude"] == "m"
    with pytest.raises(KeyError):
        identity({})


def test_the_combined_report_keeps_the_prepared_lines(tmp_path):
    prepared = tmp_path / "quarantine.csv"
    prepared.write_text("file,kind,detail,action\na.png,zero_byte,empty file,image_left_out\n")
    out = exclude.write_report(prepared, tmp_path / "out" / "quarantine.csv",
                               exclude.quarantine_lines([Exclusion("val", "b.png", 7, "r")],
                                                        masks=False))
    lines = out.read_text().splitlines()
    assert lines[1].startswith("a.png,zero_byte") and len(lines) == 3
    assert lines[2] == "val/b.png,excluded_suspect,annotation 7: r,excluded"
    assert json.loads(json.dumps(lines))  # plain text


def test_reads_what_the_retrain_writes(tmp_path):
    from visiongate import suspects

    written = suspects.write_suspects([
        suspects.Suspect("train", "images/000003.png", 12, "swapped_class", 0.25, "a square",
                         (1.0, 2.0, 30.0, 40.0)),
        suspects.Suspect("val", "images/000001.png", None, "missing_box", 0.125, "no box")],
        tmp_path / "suspects.csv")
    rows = review.read_suspects(written)
    assert [(r.item, r.kind, r.score) for r in rows] == [
        ("val/images/000001.png", "missing_box", 0.125),
        ("train/images/000003.png#12", "swapped_class", 0.25)]
