"""Dataset statistics on a hand-made canonical dataset, and the plots."""

from __future__ import annotations

import json

from PIL import Image

from flows.cli import main
from visiongate.datasets.stats import dataset_stats, flat_stats, write_stat_plots

CATEGORIES = [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]


def _split(root, anns_per_image):
    """A split whose image k has the given [(category, w, h, area)] annotations."""
    (root / "images").mkdir(parents=True)
    images, anns = [], []
    for k, objects in enumerate(anns_per_image, start=1):
        Image.new("RGB", (200, 200)).save(root / "images" / f"{k}.png")
        images.append({"id": k, "file_name": f"images/{k}.png", "width": 200, "height": 200})
        for category, w, h, area in objects:
            anns.append({"id": len(anns) + 1, "image_id": k, "category_id": category,
                         "bbox": [0, 0, w, h], "area": area, "iscrowd": 0})
    (root / "annotations.json").write_text(json.dumps(
        {"images": images, "annotations": anns, "categories": CATEGORIES}))


def _dataset(root):
    # areas: 31² small, 32² medium (COCO's bound is strict), 96² large
    _split(root / "train", [[(1, 31, 31, 31 * 31), (2, 32, 32, 32 * 32)], [], [(1, 96, 96, 9216)]])
    _split(root / "val", [[(2, 10, 10, 100)]])
    _split(root / "test", [[]])
    return root


def test_counts_per_split_class_and_size(tmp_path):
    stats = dataset_stats(_dataset(tmp_path))
    train = stats["splits"]["train"]
    assert stats["classes"] == ["cat", "dog"]
    assert (train["images"], train["objects"], train["empty_images"]) == (3, 3, 1)
    assert train["per_class"] == {"cat": 2, "dog": 1}
    assert train["sizes"] == {"small": 1, "medium": 1, "large": 1}
    assert stats["splits"]["test"] == {"images": 1, "objects": 0, "empty_images": 1,
                                       "per_class": {"cat": 0, "dog": 0},
                                       "sizes": {"small": 0, "medium": 0, "large": 0}}
    assert flat_stats(stats)["val/small"] == 1.0
    json.dumps(stats)  # JSON-friendly for MLflow


def test_plots_are_written(tmp_path):
    paths = write_stat_plots(dataset_stats(_dataset(tmp_path / "d")), tmp_path / "plots")
    assert [p.name for p in paths] == ["class_histogram.png", "box_sizes.png"]
    for path in paths:
        with Image.open(path) as image:
            assert image.format == "PNG" and image.size[0] >= 300


def test_stats_command_prints_and_writes_plots(tmp_path, capsys):
    _dataset(tmp_path / "data" / "prepared" / "tiny")
    assert main(["data", "stats", "tiny", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "train: 3 images, 3 objects, 1 empty images; small 1, medium 1, large 1" in out
    assert (tmp_path / ".cache" / "stats" / "tiny" / "box_sizes.png").is_file()
