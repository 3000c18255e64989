"""Suspected label mistakes: fixed fake predictions on tiny canonical splits (no model)."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from visiongate import suspects, suspects_csv
from visiongate.datasets.coco import load_split
from visiongate.errors import DataError
from visiongate.plots_suspects import suspects_gallery
from visiongate.suspects import Suspect, score_predictions

NAMES = ["circle", "square"]
# per image: two well separated objects (category id, xyxy) — what is really there
OBJECTS = [[(1, (4, 4, 24, 24)), (2, (36, 36, 60, 60))],
           [(2, (6, 30, 26, 50)), (1, (40, 6, 58, 24))],
           [(1, (8, 8, 28, 28)), (2, (34, 34, 58, 58))],
           [(2, (4, 36, 24, 56)), (1, (36, 4, 56, 24))]]


def write_split(root: Path, labelled: list[list[tuple]], image_labels=None, extra=None) -> Path:
    """A canonical split: 64 px PNGs + annotations.json with the given (category, xyxy)."""
    (root / "images").mkdir(parents=True)
    images, annotations = [], []
    for n, objects in enumerate(labelled):
        name = f"images/{n:03d}.png"
        Image.fromarray(np.full((64, 64, 3), 40 * n, np.uint8)).save(root / name)
        image = {"id": n + 1, "file_name": name, "width": 64, "height": 64, **(extra or {})}
        if image_labels is not None:
            image["labels"] = image_labels[n]
        images.append(image)
        for category, (x1, y1, x2, y2) in objects:
            annotations.append({"id": len(annotations) + 1, "image_id": n + 1, "iscrowd": 0,
                                "category_id": category, "bbox": [x1, y1, x2 - x1, y2 - y1],
                                "area": (x2 - x1) * (y2 - y1)})
    categories = [{"id": i + 1, "name": name} for i, name in enumerate(NAMES)]
    (root / "annotations.json").write_text(json.dumps(
        {"images": images, "annotations": annotations, "categories": categories}))
    return root


def perfect_predictions(objects=OBJECTS) -> list[dict]:
    """The true objects at 0.99, plus a low-score box per image (conf 0.001 keeps those)."""
    out = []
    for image in objects:
        boxes = [box for _, box in image] + [(0, 0, 10, 10)]
        labels = [c for c, _ in image] + [2]
        out.append({"boxes": np.array(boxes, float), "labels": np.array(labels),
                    "scores": np.array([0.99] * len(image) + [0.01])})
    return out


def test_a_swapped_class_ranks_first(tmp_path):
    labelled = [list(objs) for objs in OBJECTS]
    labelled[2][1] = (1, labelled[2][1][1])  # the square of image 2 labelled circle
    split = load_split(write_split(tmp_path / "val", labelled))
    rows = score_predictions(split, perfect_predictions(), "detect")
    assert rows[0].kind == "swapped_class" and rows[0].annotation == 6
    assert rows[0].file == "images/002.png" and rows[0].split == "val"
    assert "labelled circle; the model sees square (0.99)" == rows[0].detail
    assert rows[0].model_box == (34, 34, 58, 58)
    assert rows == sorted(rows, key=lambda r: r.score)


def test_a_dropped_box_is_a_missing_box(tmp_path):
    labelled = [list(objs) for objs in OBJECTS]
    del labelled[1][0]  # the square of image 1 never labelled
    split = load_split(write_split(tmp_path / "val", labelled))
    missing = [r for r in score_predictions(split, perfect_predictions(), "detect")
               if r.kind == "missing_box"]
    assert len(missing) == 1 and missing[0].annotation is None
    assert missing[0].file == "images/001.png" and missing[0].model_box == (6, 30, 26, 50)
    assert missing[0].detail == "missing box: square 0.99 at [6,30,26,50]"


def test_a_shifted_box_is_badly_placed(tmp_path):
    labelled = [list(objs) for objs in OBJECTS]
    labelled[3][0] = (2, (14, 46, 34, 66))  # shifted by half its size right and down
    split = load_split(write_split(tmp_path / "val", labelled))
    placed = [r for r in score_predictions(split, perfect_predictions(), "detect")
              if r.kind == "badly_placed"]
    assert placed[0].annotation == 7 and placed[0].score < 0.5
    assert all(r.score > 0.99 for r in placed[1:])
    assert "the model puts it at [4,36,24,56] (IoU 0.14)" in placed[0].detail


def test_a_neighbours_box_is_no_evidence_of_placement(tmp_path):
    """A labelled circle the model barely sees, touching another circle it sees well: the
    neighbour's box belongs to the neighbour, so it says nothing about this box's place."""
    split = load_split(write_split(tmp_path / "val", [[(1, (4, 4, 24, 24)), (1, (22, 4, 42, 24))]]))
    preds = [{"boxes": np.array([[4, 4, 24, 24], [22, 4, 42, 24]], float),
              "scores": np.array([0.2, 0.99]), "labels": np.array([1, 1])}]
    assert not [r for r in score_predictions(split, preds, "detect") if r.score < 0.5]


def test_crowd_boxes_are_ignored_and_clean_labels_raise_nothing(tmp_path):
    root = write_split(tmp_path / "val", OBJECTS)
    coco = json.loads((root / "annotations.json").read_text())
    coco["annotations"].append({"id": 99, "image_id": 1, "iscrowd": 1, "category_id": 1,
                                "bbox": [36, 36, 24, 24], "area": 576})
    (root / "annotations.json").write_text(json.dumps(coco))
    rows = score_predictions(load_split(root), perfect_predictions(), "instance")
    assert not [r for r in rows if r.score < 0.5 or r.annotation == 99]


def test_box_inputs_match_cleanlabs_own(tmp_path):
    """The numpy auxiliary inputs give cleanlab's own scores from labels + predictions (no
    predicted box here belongs to another labelled box, so the neighbour rule is idle)."""
    from cleanlab.object_detection import rank

    labelled = [list(objs) for objs in OBJECTS]
    labelled[0][0], labelled[3][0] = (2, labelled[0][0][1]), (2, (14, 46, 34, 66))
    del labelled[1][1]
    preds = perfect_predictions()
    labels = [{"bboxes": np.array([b for _, b in objs], float).reshape(-1, 4),
               "labels": np.array([c - 1 for c, _ in objs])} for objs in labelled]
    per_class = [[np.column_stack([p["boxes"], p["scores"]])[p["labels"] == k + 1]
                  for k in range(2)] for p in preds]
    aux = [suspects._image_inputs(lab["bboxes"], lab["labels"] + 1, p)
           for lab, p in zip(labels, preds)]
    floor = min(a["similarity_matrix"][a["similarity_matrix"] > 0].min() for a in aux)
    for a in aux:
        a["min_possible_similarity"] = floor
    for fn in (rank.compute_swap_box_scores, rank.compute_overlooked_box_scores,
               rank.compute_badloc_box_scores):
        theirs, ours = fn(labels=labels, predictions=per_class), fn(auxiliary_inputs=aux)
        for a, b in zip(theirs, ours):  # both orders: per label box, per predicted box
            np.testing.assert_allclose(np.sort(a), np.sort(b), atol=1e-9)


def test_a_flipped_classification_label_is_a_wrong_label(tmp_path):
    split = load_split(write_split(tmp_path / "test", [[]] * 4, [[1], [2], [1], [2]]))
    probs = [np.array(p, np.float32) for p in ([0.9, 0.1], [0.97, 0.03], [0.8, 0.2], [0.1, 0.9])]
    rows = score_predictions(split, probs, "classify")
    assert [r.kind for r in rows] == ["wrong_label"] * 4
    assert rows[0].file == "images/001.png" and rows[0].score == pytest.approx(0.03)
    assert rows[0].detail == "labelled square; the model sees circle (0.97)"


def test_a_crop_names_its_source_image_and_annotation(tmp_path):
    source = {"source": {"file_name": "images/000017.png", "annotation": 42}}
    split = load_split(write_split(tmp_path / "test", [[]], [[1]], extra=source))
    (row,) = score_predictions(split, [np.array([0.2, 0.8])], "classify")
    assert (row.file, row.annotation) == ("images/000017.png", 42)
    assert row.detail.endswith("(crop images/000.png)")


def test_multilabel_scores_each_image(tmp_path):
    split = load_split(write_split(tmp_path / "test", [[]] * 3, [[1], [1, 2], [2]]))
    probs = [np.array([0.9, 0.05]), np.array([0.9, 0.02]), np.array([0.95, 0.9])]
    rows = score_predictions(split, probs, "multilabel")
    assert {r.file for r in rows[:2]} == {"images/001.png", "images/002.png"}
    assert rows[-1].file == "images/000.png"
    assert {r.detail for r in rows[:2]} == {
        "labelled circle, square; the model doubts square (0.02)",
        "labelled square; the model also sees circle (0.95)"}


def test_semantic_masks_are_scored_by_agreement(tmp_path):
    root = write_split(tmp_path / "val", [[]] * 2)
    (root / "masks").mkdir()
    mask = np.zeros((64, 64), np.uint8)
    mask[:32, :32], mask[32:, 32:] = 1, 2
    for n in range(2):
        Image.fromarray(mask).save(root / "masks" / f"{n:03d}.png")
    wrong = mask.copy()
    wrong[32:, 32:48] = 0  # half of the square missed: IoU 0.5, circle 1.0
    rows = score_predictions(load_split(root), [mask, wrong], "segment")
    assert [(r.file, r.kind) for r in rows] == [("images/001.png", "bad_mask"),
                                                ("images/000.png", "bad_mask")]
    assert rows[0].score == pytest.approx(0.75) and rows[1].score == 1.0
    assert rows[0].detail == "worst class square: IoU 0.50 (labelled 1024 px, predicted 512 px)"


def test_find_suspects_predicts_each_split_and_keeps_the_worst(tmp_path, monkeypatch):
    from visiongate import models

    labelled = [list(objs) for objs in OBJECTS]
    labelled[2][1] = (1, labelled[2][1][1])
    splits = {"val": write_split(tmp_path / "val", labelled),
              "test": write_split(tmp_path / "test", OBJECTS)}
    models.CheckpointMeta("yolo", "detect", tuple(NAMES), "w.pt").write(tmp_path / "ckpt")
    by_file = dict(zip((f"{n:03d}.png" for n in range(4)), perfect_predictions()))
    monkeypatch.setattr(models, "load", lambda ckpt: lambda paths: [
        {**by_file[Path(p).name], "masks": None} for p in paths])
    rows = suspects.find_suspects(tmp_path / "ckpt", splits, limit=3)
    assert len(rows) == 3 and rows[0].split == "val" and rows[0].kind == "swapped_class"
    models.CheckpointMeta("yolo", "detect", ("a", "b"), "w.pt").write(tmp_path / "ckpt")
    with pytest.raises(DataError, match="differ from the model's"):
        suspects.find_suspects(tmp_path / "ckpt", splits)


ROWS = [Suspect("val", "images/002.png", 6, "swapped_class", 0.00123,
                'labelled circle; the model sees "square", (0.99)', (34.0, 34.0, 58.0, 58.0)),
        Suspect("train", "images/001.png", None, "missing_box", 0.5, "missing box: square",
                (6.5, 30.0, 26.0, 50.0)),
        Suspect("val", "images/000.png", None, "wrong_label", 1.0, "labelled circle")]


def test_csv_round_trip(tmp_path):
    path = suspects.write_suspects(ROWS, tmp_path / "suspects.csv")
    assert path.read_text().splitlines()[0] == "split,file,annotation,kind,score,detail,model_box"
    back = suspects.read_suspects(path)
    assert back[0].score == 0.0012 and back[1:] == ROWS[1:]
    assert back[0] == Suspect(*list(vars(ROWS[0]).values())[:4], 0.0012, *list(
        vars(ROWS[0]).values())[5:])


@pytest.mark.parametrize("text", [
    "a,b\n1,2\n",                                                   # another header
    "split,file,annotation,kind,score,detail,model_box\nval,f,,eaten,0.1,d,\n",   # kind
    "split,file,annotation,kind,score,detail,model_box\nval,f,,bad_mask,nan,d,\n",
    "split,file,annotation,kind,score,detail,model_box\nval,f,x,bad_mask,0.1,d,\n",
    "split,file,annotation,kind,score,detail,model_box\nval,f,,bad_mask,0.1,d,1 2 inf 4\n",
    "split,file,annotation,kind,score,detail,model_box\nval,f,,bad_mask,0.1\n",
    "split,file,annotation,kind,score,detail,model_box\nval,/etc/passwd,,bad_mask,0.1,d,\n",
    "split,file,annotation,kind,score,detail,model_box\ntest,f,,bad_mask,0.1,d,\n",
    "split,file,annotation,kind,score,detail,model_box\nval,f,,bad_mask,0.1,\"" + "x" * 200_000,
])
def test_a_hostile_csv_is_a_data_error(tmp_path, text):
    path = tmp_path / "suspects.csv"
    path.write_text(text)
    with pytest.raises(DataError, match="suspects.csv"):
        suspects.read_suspects(path)


def test_control_characters_in_a_detail_are_replaced(tmp_path):
    path = tmp_path / "suspects.csv"
    path.write_text("split,file,annotation,kind,score,detail,model_box\n"
                    "val,f.png,,bad_mask,0.1,a\0b\x1b[31m,\n")
    assert suspects.read_suspects(path)[0].detail == "a?b?[31m"


def test_an_oversized_csv_is_refused_before_parsing(tmp_path, monkeypatch):
    monkeypatch.setattr(suspects_csv, "MAX_CSV_BYTES", 100)
    path = suspects.write_suspects(ROWS * 3, tmp_path / "suspects.csv")
    with pytest.raises(DataError, match="bigger than"):
        suspects.read_suspects(path)


def test_gallery_draws_the_rows_inside_their_split(tmp_path):
    root = write_split(tmp_path / "val", OBJECTS)
    rows = [Suspect("val", "../val/../../etc/passwd", None, "missing_box", 0.0, "escape"),
            Suspect("val", "images/002.png", 6, "swapped_class", 0.1, "d", (34, 34, 58, 58)),
            Suspect("val", "images/001.png", None, "missing_box", 0.2, "d", (6, 30, 26, 50))]
    out = suspects_gallery(rows, {"val": root}, tmp_path / "out" / "suspects.png")
    assert out.is_file() and Image.open(out).size[0] > 300
    empty = suspects_gallery([], {"val": root}, tmp_path / "empty.png")
    assert empty.is_file()
