"""The suspects gallery (`suspects/suspects.png` of a retrain run): the most suspect labels
drawn on their images."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from visiongate.datasets import safe_load
from visiongate.datasets.coco import Split, load_split
from visiongate.geometry import xywh_to_xyxy
from visiongate.plots import FP, GT, _box, _grid, _save, plt
from visiongate.suspects_csv import Suspect


def _picture(row: Suspect, split_dirs: dict[str, Path], splits: dict[str, Split]):
    """(image, labelled box or None) of a row; None when its file is not inside its split."""
    if row.split not in split_dirs:
        return None
    root = Path(split_dirs[row.split]).resolve()
    path = root / row.file
    if path.is_symlink() or root not in path.resolve().parents or not path.is_file():
        return None  # paths from a CSV are untrusted: inside their split dir, no links
    if row.split not in splits:
        splits[row.split] = load_split(root)
    anns = [a for anns in splits[row.split].annotations.values() for a in anns
            if a.get("id") == row.annotation] if row.annotation is not None else []
    with safe_load.pixel_guard(path), Image.open(path) as im:
        safe_load.check_pixels(im.size, path)
        image = im.convert("RGB")
    return image, xywh_to_xyxy([anns[0]["bbox"]])[0] if anns else None


def suspects_gallery(rows: list[Suspect], split_dirs: dict[str, Path], out_png: Path,
                     n: int = 8) -> Path:
    """The n worst suspects that can be drawn: the labelled box green, the model's box red
    dashed; caption = kind, score and file. split_dirs: the folders the rows' files are
    relative to (for a crops-view classifier, the prepared splits its crops came from);
    rows whose file is not inside them are skipped."""
    splits: dict[str, Split] = {}
    items = []
    for row in sorted(rows, key=lambda r: r.score):
        if len(items) == n:
            break
        picture = _picture(row, split_dirs, splits)
        if picture is not None:
            items.append((row, *picture))
    fig, axes = _grid(len(items))
    for ax, (row, image, labelled) in zip(axes, items):
        ax.imshow(image)
        if labelled is not None:
            _box(ax, labelled, GT)
        if row.model_box is not None:
            _box(ax, row.model_box, FP, dashed=True)
        ax.set_title(f"{row.kind} {row.score:.2f} · {Path(row.file).name}\n"
                     f"{safe_load.cut(row.detail, 48)}", fontsize=7)
    if not items:
        plt.gca().text(0.5, 0.5, "no suspects to show", ha="center", va="center")
    fig.suptitle("Suspected label mistakes — green: label, red dashed: the model", fontsize=9)
    return _save(fig, out_png)
