"""Import stage: source folder -> validated canonical dataset (the DVC stage `prepare-<name>`).

    python -m visiongate.datasets.prepare --format yolo --src data/raw/NAME \\
        --out data/prepared/NAME [--split train=0.7,val=0.15,test=0.15] [--seed 0] \\
        [--params params.yaml] [--classes data/classes/NAME.txt]

Writes <out>/{train,val,test}, <out>/quarantine.csv (one line per bad item: file, kind,
detail, action) and <out>/info.json (format, classes, has_masks, counts; `image_labels`:
true for the image-label formats folders and csv). Fails with a clear message when
nothing usable is left, a split ends up empty, or the quarantined share of images passes
`validation.max_quarantine_share`. Never writes to the source. `--classes`: the class list of
the previous import, whose ids the classes that stay keep (visiongate.datasets.class_ids).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import time
from pathlib import Path

import pydantic
import yaml

from visiongate.config import ValidationConfig
from visiongate.datasets import class_ids, rawcopy, safe_load
from visiongate.datasets import splits as splitting
from visiongate.datasets.formats import FORMATS, read_source
from visiongate.datasets.formats.canonical import write_canonical
from visiongate.datasets.validate import summarize, validate, write_quarantine
from visiongate.errors import ConfigError, DataError, VisiongateError

QUARANTINE = "quarantine.csv"
INFO = "info.json"


def prepare(fmt: str, src: Path, out: Path, ratios: dict[str, float] | None = None,
            seed: int = 0, cfg: ValidationConfig | None = None,
            classes: Path | None = None) -> dict:
    """Read, validate, split and write one dataset; return its info dict (also info.json)."""
    cfg = cfg or ValidationConfig()
    with safe_load.pixel_limit(cfg.max_pixels):  # readers, validation and writer alike
        return _prepare(fmt, src, ratios, seed, cfg, Path(out), classes)


def _prepare(fmt: str, src: Path, ratios: dict[str, float] | None, seed: int,
             cfg: ValidationConfig, out: Path, classes: Path | None = None) -> dict:
    source = read_source(fmt, Path(src))
    source.issues[:0] = rawcopy.skipped(Path(src))  # what the import's copy left out
    kept, issues = validate(source, cfg.clip_tolerance, cfg.min_box_px)
    write_quarantine(issues, out / QUARANTINE)  # first: a failed import still explains itself
    summary = summarize(issues, len(kept))
    report = out / QUARANTINE
    if not kept:
        raise DataError(f"{src}: no usable {fmt} image ({summary.quarantined} quarantined, "
                        f"see {report})")
    if not source.classes:
        raise DataError(f"{src}: no class names found for format {fmt}")
    if summary.share > cfg.max_quarantine_share:
        raise DataError(f"{src}: {summary.quarantined} of {summary.total} images quarantined "
                        f"({summary.share:.1%}) > validation.max_quarantine_share "
                        f"{cfg.max_quarantine_share:.0%}; see {report}")
    changes = class_ids.keep_ids(source, kept, class_ids.read_reference(classes)) \
        if classes is not None else None
    assigned = splitting.assign(kept, ratios or splitting.DEFAULT_RATIOS, seed)
    empty = [name for name, items in assigned.items() if not items]
    if empty:
        raise DataError(f"{src}: split(s) {', '.join(empty)} empty after quarantine "
                        f"({len(kept)} usable images); change --split or add images")
    info = write_canonical(source, assigned, out)
    info.update(quarantine=dataclasses.asdict(summary), seed=seed, ratios=ratios or splitting.DEFAULT_RATIOS)
    if changes is not None:
        info["class_changes"] = changes
    (out / INFO).write_text(json.dumps(info, indent=2) + "\n")
    return info


def has_masks(prepared_root: Path) -> bool:
    """Does the dataset carry segmentation (masks/ label maps)? False: boxes only."""
    info = Path(prepared_root) / INFO
    if info.is_file():
        return bool(json.loads(info.read_text()).get("has_masks"))
    return any((Path(prepared_root) / s / "masks").is_dir() for s in splitting.SPLITS)


def check_task_data(name: str, data: Path, tasks: list[str]) -> None:
    """DataError naming the section to disable when the dataset cannot train a task: boxes
    without masks (segment), image labels without objects (detect, segment)."""
    from visiongate.datasets.image_labels import image_labels_only

    labels_only = image_labels_only(data)
    if "segment" in tasks and not has_masks(data):
        kind = "image labels" if labels_only else "boxes"
        raise DataError(f"dataset {name!r} has {kind} only, no masks: a segmentation "
                        "model cannot train on it (set segment.enabled: false, or import masks)")
    if "detect" in tasks and labels_only:
        raise DataError(f"dataset {name!r} has image labels only, no boxes: a detector "
                        "cannot train on it (set detect.enabled: false, or import boxes)")


def tree_md5(root: Path) -> str:
    """md5 over every file's relative path and bytes under root (hidden entries included);
    a symbolic link counts as its target's name, never followed (folders: not entered)."""
    digest = hashlib.md5()
    root = Path(root)
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        links = sorted(d for d in dirnames if (Path(dirpath) / d).is_symlink())
        for name in sorted(filenames + links):
            path = Path(dirpath) / name
            digest.update(path.relative_to(root).as_posix().encode() + b"\0")
            data = os.readlink(path).encode() + b"\0link" if path.is_symlink() else (
                path.read_bytes() if path.is_file() else b"\0special")
            digest.update(hashlib.md5(data).digest())
    return digest.hexdigest()


def validation_config(params_file: Path) -> ValidationConfig:
    """The `validation` section alone (defaults when the file or section is absent): the
    stage needs no other section, and validating all of params.yaml imports torch."""
    raw = yaml.safe_load(params_file.read_text()) if params_file.is_file() else None
    section = (raw or {}).get("validation") if isinstance(raw, dict) else None
    try:
        return ValidationConfig.model_validate(section or {})
    except pydantic.ValidationError as err:
        raise ConfigError(f"{params_file}: invalid `validation` section: {err}") from err


def format_summary(info: dict, out: Path) -> str:
    q = info["quarantine"]
    per_split = " ".join(f"{s}={n}" for s, n in info["images"].items())
    kinds = ", ".join(f"{k} {n}" for k, n in q["by_kind"].items()) or "none"
    labels = "image labels" if info.get("image_labels") else \
        f"{sum(info['objects'].values())} objects"
    return (f"{out}: {per_split} images, {labels}, "
            f"{len(info['classes'])} classes, masks: {'yes' if info['has_masks'] else 'no'}\n"
            f"quarantine: {q['quarantined']} image(s) left out ({q['share']:.1%}); "
            f"lines by kind: {kinds} -> {out / QUARANTINE}"
            + (f"\n{changed}" if (changed := class_ids.describe(info.get("class_changes") or {}))
               else ""))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--format", required=True, choices=FORMATS)
    parser.add_argument("--src", required=True, type=Path, help="source folder (read only)")
    parser.add_argument("--out", required=True, type=Path, help="dataset root to write")
    parser.add_argument("--split", default="train=0.7,val=0.15,test=0.15")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--params", default="params.yaml", help="params file (uses `validation`)")
    parser.add_argument("--classes", type=Path, help="the previous import's class list: ids kept")
    args = parser.parse_args(argv)
    cfg = validation_config(Path(args.params))
    start = time.perf_counter()
    try:
        info = prepare(args.format, args.src, args.out, splitting.parse_ratios(args.split),
                       args.seed, cfg, args.classes)
    except VisiongateError as err:
        raise SystemExit(f"prepare: error: {err}") from None
    print(format_summary(info, args.out) + f" ({time.perf_counter() - start:.1f}s)")


if __name__ == "__main__":
    main()
