"""Time dataset import + validation (images/s) on coco128-seg with the YOLO importer.

Not a test: run by hand; it replaces only its own section of BENCHMARKS.md.
Each run: `prepare()` end to end (parse labels, decode and check every image, check every
polygon, assign splits, copy images, rasterise label maps, write COCO JSON) into a fresh
folder; separately, parse + validate alone (what `visiongate data validate` re-runs).
DVC's own work (copy to data/raw, hashing) is not included.

    python benchmarks/bench_import.py [--repeats 3] [--src ../shared/data/coco128-seg]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.report import machine, update_section  # noqa: E402

from visiongate.config import ValidationConfig  # noqa: E402
from visiongate.datasets.formats import read_source  # noqa: E402
from visiongate.datasets.prepare import prepare  # noqa: E402
from visiongate.datasets.validate import validate  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## Import + validate throughput"


def _runs(fn, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    default_src = Path(os.environ.get("VISIONGATE_SHARED_DATA", ROOT.parent / "shared" / "data"))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, default=default_src / "coco128-seg")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md")
    args = parser.parse_args()
    cfg = ValidationConfig()
    work = Path(tempfile.mkdtemp(prefix="bench_import_"))
    try:
        info = {}

        def full():
            shutil.rmtree(work / "out", ignore_errors=True)
            info.update(prepare("yolo", args.src, work / "out", cfg=cfg))

        def check():
            validate(read_source("yolo", args.src), cfg.clip_tolerance)

        full_runs = _runs(full, args.repeats)
        check_runs = _runs(check, args.repeats)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    images = sum(info["images"].values())
    objects = sum(info["objects"].values())
    t_full, t_check = statistics.median(full_runs), statistics.median(check_runs)
    rows = (f"| import + validate + write (`prepare`) | {t_full:.2f} s | {images / t_full:.0f} |\n"
            f"| parse + validate only | {t_check:.2f} s | {images / t_check:.0f} |\n")
    print(rows, end="")
    command = f".venv/bin/python benchmarks/bench_import.py --repeats {args.repeats}"
    section = f"""{SECTION}

`visiongate.datasets.prepare.prepare` on coco128-seg ({images} JPEG photos, {objects}
instance polygons, 80 classes) with the YOLO importer, from the shared data folder into a
fresh temporary folder: parse the label files, decode every image (JPEG at 1/8 scale,
which still reads every byte, so truncation is caught), check every polygon, split, copy
the images, rasterise the semantic label maps, write the COCO JSON. "Parse + validate
only" is the same without writing. DVC's copy and hashing are not included. Median of
{args.repeats} runs, in one process.

Machine: {machine()}.

Command: `{command}`

| work | median | images/s |
|---|---|---|
{rows}
Individual runs (s): prepare {', '.join(f'{t:.2f}' for t in full_runs)}; parse + validate
{', '.join(f'{t:.2f}' for t in check_runs)}.
"""
    update_section(section, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
