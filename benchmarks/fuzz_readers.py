"""Fuzz every importer (coco, yolo, voc, masks) and `evaluate-coco` with hypothesis, bounded
in time, and report what was tried in BENCHMARKS.md.

Every input (benchmarks/fuzz_inputs.py: structured-random sources, then mutations) must
end as a result, quarantine lines or a `VisiongateError` — any other exception is a
finding — and the source's bytes must be unchanged. Importers run read -> validate ->
write canonical (every kept image in train) inside the pixel limit, as `prepare` does.
Each target runs in its own process: a crash in native code is reported as such, and the
input that caused it is kept in `.cache/fuzz/<target>-crash/`.

    python benchmarks/fuzz_readers.py [--seconds 60] [--targets coco yolo voc masks
        evaluate-coco] [--seed 0] [--write]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from hypothesis import HealthCheck, given, seed, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from benchmarks import fuzz_inputs as inputs  # noqa: E402
from benchmarks.report import machine, update_section  # noqa: E402
from visiongate.config import ValidationConfig  # noqa: E402
from visiongate.datasets import safe_load  # noqa: E402
from visiongate.datasets.formats import read_source  # noqa: E402
from visiongate.datasets.formats.canonical import write_canonical  # noqa: E402
from visiongate.datasets.prepare import tree_md5  # noqa: E402
from visiongate.datasets.validate import validate  # noqa: E402
from visiongate.errors import VisiongateError  # noqa: E402
from visiongate.metrics import evaluate_coco_files  # noqa: E402

SECTION = "## Reader fuzzing (hypothesis)"
WRITERS = {"coco": inputs.write_coco, "yolo": inputs.write_yolo, "voc": inputs.write_voc,
           "masks": inputs.write_masks}
TARGETS = (*WRITERS, "evaluate-coco")
CFG = ValidationConfig(max_quarantine_share=1.0)
BATCH = 40
CRASHES = Path(__file__).resolve().parents[1] / ".cache" / "fuzz"


class SourceChanged(AssertionError):
    """A reader wrote into the source: always a finding."""


def _import(target: str, data, work: Path) -> tuple[str, str]:
    src, out = work / "src", work / "out"
    shape = WRITERS[target](data, src)
    before = tree_md5(src)
    try:
        with safe_load.pixel_limit(CFG.max_pixels):
            source = read_source(target, src)
            kept, issues = validate(source, CFG.clip_tolerance)
            if kept and source.classes:
                write_canonical(source, {"train": kept, "val": [], "test": []}, out)
        outcome = "quarantine lines" if issues else "result"
    except VisiongateError:
        outcome = "VisiongateError"
    if tree_md5(src) != before:
        raise SourceChanged(f"{target}: the source changed")
    return outcome, shape


def _evaluate(data, work: Path) -> tuple[str, str]:
    iou_type, shape = inputs.write_evaluate(data, work / "src")
    try:
        evaluate_coco_files(work / "src" / "gt.json", work / "src" / "pred.json", iou_type)
        return "result", shape
    except VisiongateError:
        return "VisiongateError", shape


def run_one(target: str, data, work: Path) -> tuple[str, str]:
    """(outcome, input shape) of one drawn input; any other exception propagates."""
    for stale in ("src", "out"):
        shutil.rmtree(work / stale, ignore_errors=True)
    if target == "evaluate-coco":
        return _evaluate(data, work)
    return _import(target, data, work)


def fuzz(target: str, work: Path, seconds: float | None = None,
         max_examples: int | None = None, start_seed: int = 0) -> dict:
    """Run hypothesis batches until `seconds` pass (or `max_examples` inputs are tried):
    {outcomes, shapes, tried, seconds, findings: [one line each]}."""
    outcomes, shapes, findings = Counter(), Counter(), []
    started, batch = time.perf_counter(), 0
    work.mkdir(parents=True, exist_ok=True)

    def one(data):
        outcome, shape = run_one(target, data, work)
        outcomes[outcome] += 1
        shapes[shape] += 1

    while True:
        left = None if max_examples is None else max_examples - sum(outcomes.values())
        if (seconds is not None and time.perf_counter() - started > seconds) or \
                (left is not None and left <= 0):  # shrinking a finding runs extra inputs
            break
        size = BATCH if left is None else min(BATCH, left)
        test = settings(max_examples=size, deadline=None, database=None, print_blob=False,
                        suppress_health_check=list(HealthCheck))(given(st.data())(one))
        try:
            seed(start_seed + batch)(test)()
        except Exception as err:  # noqa: BLE001 (a finding: recorded, the fuzz goes on)
            notes = " | ".join(getattr(err, "__notes__", []))[:600]
            findings.append(f"{type(err).__name__}: {str(err)[:300]} [{notes}]")
            outcomes["other exception"] += 1
        batch += 1
    return {"outcomes": dict(outcomes), "shapes": dict(shapes),
            "tried": sum(outcomes.values()), "seconds": time.perf_counter() - started,
            "findings": findings}


def _child(args) -> None:
    result = fuzz(args.child, Path(args.workdir) / args.child, args.seconds, None, args.seed)
    Path(args.result).write_text(json.dumps(result))


def _run_target(target: str, args, workdir: Path) -> dict:
    result_file = workdir / f"{target}.json"
    cmd = [sys.executable, __file__, "--child", target, "--seconds", str(args.seconds),
           "--seed", str(args.seed), "--workdir", str(workdir), "--result", str(result_file)]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True)
    if proc.returncode != 0 or not result_file.is_file():
        last = workdir / target / "src"
        if last.is_dir():  # the input being read when the process died
            shutil.copytree(last, CRASHES / f"{target}-crash", dirs_exist_ok=True)
        finding = f"process ended with code {proc.returncode}: {proc.stderr.strip()[-400:]}"
        return {"outcomes": {}, "shapes": {}, "tried": 0, "seconds": args.seconds,
                "findings": [finding]}
    return json.loads(result_file.read_text())


def _section(results: dict, args) -> str:
    rows = "\n".join(
        f"| {t} | {r['tried']} | {r['outcomes'].get('result', 0)} | "
        f"{r['outcomes'].get('quarantine lines', 0)} | {r['outcomes'].get('VisiongateError', 0)} | "
        f"{len(r['findings'])} | {r['seconds']:.0f} s |" for t, r in results.items())
    shapes = "\n".join(f"- **{t}**: " + "; ".join(
        f"{s} ({n})" for s, n in sorted(r["shapes"].items(), key=lambda kv: -kv[1])[:8])
        for t, r in results.items())
    findings = [f"- {t}: {f}" for t, r in results.items() for f in r["findings"]]
    return f"""{SECTION}

`benchmarks/fuzz_readers.py`: hypothesis draws a tiny hostile source per input
(benchmarks/fuzz_inputs.py — structured COCO JSON / YOLO lines + names / VOC XML / mask
images of every mode, then fields replaced by values of other types, NaN/inf, huge numbers
and strings, YAML aliases, entity bombs, 20000-deep nesting, truncated or injected bytes,
200 MP headers) and runs read → validate → write canonical (or `evaluate-coco`). Every
input must end as a result, quarantine lines or a `VisiongateError`, with the source's
bytes unchanged; anything else is a finding. Seed {args.seed}, batches of {BATCH}.

Machine: {machine()}.

Command: `make bench` (= `.venv/bin/python benchmarks/fuzz_readers.py --seconds {args.seconds:g} --write`)

| target | inputs tried | result | quarantine lines | VisiongateError | other exceptions | time |
|---|---|---|---|---|---|---|
{rows}

Input shapes tried (most frequent first):
{shapes}

Findings: {"none" if not findings else ""}
""" + "\n".join(findings)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60, help="per target")
    parser.add_argument("--targets", nargs="+", choices=TARGETS, default=list(TARGETS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--write", action="store_true", help="update BENCHMARKS.md")
    parser.add_argument("--child", choices=TARGETS, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args)
        return 0
    with tempfile.TemporaryDirectory(prefix="visiongate-fuzz-") as tmp:
        results = {t: _run_target(t, args, Path(tmp)) for t in args.targets}
    section = _section(results, args)
    print(section)
    if args.write:
        update_section(section)
    return 1 if any(r["findings"] for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
