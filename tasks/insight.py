from pathlib import Path

from prefect import task

TOP = 5  # suspects the gate report lists

# heavy imports (torch, grad-cam, cleanlab, scikit-learn) where they are used: a retrain
# with nothing to do never pays for them


@task
def explain_candidate(checkpoint: str, champion: str | None, split_dir: str, plots_dir: str,
                      out_dir: str, heatmaps: bool, test_map: bool,
                      method: str | None = None) -> list[str]:
    """The report's heatmap gallery (candidate beside champion) and the test-split map."""
    from visiongate.run_insight import explain_run

    return [str(p) for p in explain_run(Path(checkpoint), Path(champion) if champion else None,
                                        Path(split_dir), Path(plots_dir), Path(out_dir),
                                        heatmaps, test_map, method)]


@task
def find_suspects(checkpoint: str, data_root: str, prepared: str,
                  out_dir: str) -> tuple[int, int, tuple[tuple[str, ...], ...]]:
    """Suspected label mistakes in the train and val splits the model trained on
    (`data_root`: the dataset or its view) into out_dir/suspects.csv, with a gallery of the
    first ones (suspects.png) drawn on the prepared dataset's images, which the rows name.
    Returns (rows, rows below ISSUE_SCORE, the first TOP rows as text for the report)."""
    from visiongate import suspects
    from visiongate.plots_suspects import suspects_gallery

    names = ("train", "val")
    rows = suspects.find_suspects(Path(checkpoint), {s: Path(data_root) / s for s in names})
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    suspects.write_suspects(rows, out / "suspects.csv")
    if rows:
        suspects_gallery(rows, {s: Path(prepared) / s for s in names},
                                  out / "suspects.png")
    top = tuple((r.split, r.file, "" if r.annotation is None else str(r.annotation), r.kind,
                 f"{r.score:.4f}", r.detail) for r in rows[:TOP])
    return len(rows), sum(r.score < suspects.ISSUE_SCORE for r in rows), top
