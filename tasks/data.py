from pathlib import Path

from prefect import task

from tasks.tracking import transient
from visiongate import versioning
from visiongate.datasets import crops, exclude, stats
from visiongate.datasets.prepare import has_masks
from visiongate.datasets.validate import check_prepared
from visiongate.outcomes import QuarantineSummary
from visiongate.paths import Project


# retried only for what may pass (DVC's lock held a moment by another process), never for a
# DataError (a failing stage, a remote without the pinned files): that fails at once
@task(retries=2, retry_delay_seconds=[5, 20], retry_condition_fn=transient)
def version_data(root: str, dataset: str) -> dict[str, str]:
    """Bring the DVC data stages up to date (pulling pinned data a worker lacks from the
    default remote); return the md5 pinning each split."""
    return versioning.reproduce(Path(root), dataset)


@task
def verify_data(root: str, dataset: str, md5s: dict[str, str]) -> int:
    """Every file of every split matches its DVC md5, in the workspace and the cache
    (not retried: a corrupted file stays corrupted)."""
    return versioning.verify(Path(root), dataset, md5s)


@task
def validate_data(root: str, dataset: str) -> QuarantineSummary:
    """Check the prepared splits are readable and consistent; return the quarantine summary
    that the data-quality gate judges."""
    return check_prepared(Project.at(root).prepared(dataset))


@task
def describe_data(root: str, dataset: str, out_dir: str) -> dict[str, float]:
    """Per-split counts (images, objects, empty images, COCO size classes) as flat metrics;
    the class histogram and box-size plot written to out_dir."""
    described = stats.dataset_stats(Project.at(root).prepared(dataset))
    stats.write_stat_plots(described, Path(out_dir))
    return stats.flat_stats(described)


@task
def model_data(root: str, dataset: str, view: str = "image") -> str:
    """The folder whose splits a model task trains and is scored on: the prepared dataset,
    or a view derived from it (without the excluded items; object crops), written once
    under .cache/views/."""
    project = Project.at(root)
    return str(crops.model_data(project.prepared(dataset), project.views, view,
                                project.exclude_list(dataset)))


@task
def version_exclusions(root: str, dataset: str) -> str | None:
    """The md5 pinning the dataset's exclusion list (re-tracked with `dvc add` if it was
    edited by hand); None when there is no list or it has no entries."""
    project = Project.at(root)
    path = project.exclude_list(dataset)
    if not exclude.read_list(path):  # checks every line; [] without a file
        return None
    return versioning.pin_file(project.root, path.relative_to(project.root).as_posix())


@task
def report_exclusions(root: str, dataset: str) -> int:
    """Check the exclusion list against the prepared splits and, when it has entries, write
    the quarantine report with one `excluded_suspect` line per entry to
    Project.quarantine_report; returns the number of entries."""
    project = Project.at(root)
    entries = exclude.read_list(project.exclude_list(dataset))
    if entries:
        prepared = project.prepared(dataset)
        exclude.check_entries(prepared, entries)
        lines = exclude.quarantine_lines(entries, has_masks(prepared))
        exclude.write_report(prepared / "quarantine.csv", project.quarantine_report(dataset),
                             lines)
    return len(entries)
