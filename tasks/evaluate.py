from pathlib import Path

from prefect import task

from visiongate.config import RobustnessConfig

# The evaluators import torch, torchvision and matplotlib (seconds): imported where they
# are used, so a retrain with nothing to do starts in a fraction of that.


@task
def evaluate_model(checkpoint: str, split_dir: str, plots_dir: str | None = None,
                   records_path: str | None = None) -> dict[str, float]:
    """Metrics of a checkpoint on one split (the pinned test split in the retrain flow);
    with plots_dir, the report's PNGs too; with records_path, the per-image records the
    gate's bootstrap resamples."""
    from visiongate.evaluate import evaluate

    return evaluate(Path(checkpoint), Path(split_dir), Path(plots_dir) if plots_dir else None,
                    Path(records_path) if records_path else None)


@task
def evaluate_robustness(checkpoint: str, split_dir: str, cache_dir: str,
                        corruptions: dict[str, int],
                        records_dir: str | None = None) -> dict[str, dict[str, float]]:
    """Metrics on albumentations-corrupted copies of the split (low light, blur, noise,
    fog); with records_dir, each copy's per-image records as `<records_dir>/<name>.npz`."""
    from visiongate.evaluate import evaluate_corrupted

    return evaluate_corrupted(Path(checkpoint), Path(split_dir), Path(cache_dir), corruptions,
                              Path(records_dir) if records_dir else None)


@task
def plot_robustness(clean: dict, robustness: dict, cfg: RobustnessConfig, plots_dir: str) -> str:
    """Bar chart: the gated metric clean and under each corruption, with the gate's floor."""
    from visiongate import plots

    return str(plots.robustness_bars(clean[cfg.metric], {c: m[cfg.metric] for c, m in robustness.items()},
                                     cfg.metric, 1 - cfg.max_relative_drop,
                                     Path(plots_dir) / "robustness.png"))
