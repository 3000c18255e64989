"""Where the project keeps things: one place for every path and name derived from the root.

    data/prepared/<dataset>/{train,val,test}   canonical splits (DVC stage outputs)
    data/exclude/<dataset>.csv                  confirmed label mistakes left out (DVC-tracked)
    .cache/views/<dataset>-...                  derived views (crops; without the exclusions)
    .cache/quarantine/<dataset>/quarantine.csv  quarantine report + exclusions, for the run
    .cache/train/<key>/                         resumable training work dirs
    .cache/plots/<run id>/                      a run's report plots (logged to MLflow)
    .cache/records/<run id>/                    per-image test records the gate resamples
    .cache/insight/<run id>/                    embeddings.npz, suspects.csv (logged to MLflow)
    .cache/robustness/<dataset>-<test md5>/     corrupted copies of the pinned test split
    .cache/champions/                           registered versions checked out for scoring
    .cache/stats/<dataset>/                     dataset statistics plots
    .cache/locks/retrain-<dataset>.lock         one retrain (or data refresh) per dataset
    .cache/stack/                               pid/state files of `visiongate up`
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock, Timeout

from visiongate.errors import RetrainBusy

SPLITS = ("train", "val", "test")


def store_uri(root: Path, uri: str) -> str:
    """params.yaml's `mlflow.tracking_uri` with a relative sqlite path resolved against the
    project root (its folder created)."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        db = (Path(root) / uri[len(prefix):]).resolve()
        db.parent.mkdir(parents=True, exist_ok=True)
        return f"{prefix}{db}"
    return uri


def registry_name(dataset: str, task: str) -> str:
    """Registered model name of a dataset's model task, e.g. `shapes-detect`."""
    return f"{dataset}-{task}"


@dataclass(frozen=True)
class Project:
    root: Path

    @classmethod
    def at(cls, root: str | Path) -> "Project":
        return cls(Path(root).resolve())

    @property
    def cache(self) -> Path:
        return self.root / ".cache"

    def prepared(self, dataset: str) -> Path:
        return self.root / "data" / "prepared" / dataset

    def split(self, dataset: str, split: str) -> Path:
        return self.prepared(dataset) / split

    def exclude_list(self, dataset: str) -> Path:
        """Annotations and images the user excluded from training (visiongate data exclude)."""
        return self.root / "data" / "exclude" / f"{dataset}.csv"

    def quarantine_report(self, dataset: str) -> Path:
        """The prepared quarantine report with the exclusions added (the prepared one is a
        DVC output, never edited): what a retrain logs as data/quarantine.csv."""
        return self.cache / "quarantine" / dataset / "quarantine.csv"

    def train_dir(self, key: str) -> Path:
        return self.cache / "train" / key

    def plots(self, run_id: str) -> Path:
        return self.cache / "plots" / run_id

    def insight(self, run_id: str) -> Path:
        """A run's test-split embeddings and suspected label mistakes (logged to MLflow)."""
        return self.cache / "insight" / run_id

    def records(self, run_id: str) -> Path:
        """Per-image records of a run's candidate, champion and corrupted evaluations."""
        return self.cache / "records" / run_id

    def robustness(self, dataset: str, test_md5: str) -> Path:
        return self.cache / "robustness" / f"{dataset}-{test_md5}"

    @property
    def views(self) -> Path:
        """Derived views of prepared datasets (e.g. object crops for a classifier)."""
        return self.cache / "views"

    @property
    def champions(self) -> Path:
        return self.cache / "champions"

    def stats(self, dataset: str) -> Path:
        return self.cache / "stats" / dataset

    @property
    def stack(self) -> Path:
        return self.cache / "stack"

    def retrain_lock(self, dataset: str) -> Path:
        """One lock per dataset: its retrains (and the data watcher's `dvc repro`) never overlap."""
        return self.cache / "locks" / f"retrain-{dataset}.lock"

    @contextmanager
    def holding_retrain_lock(self, dataset: str) -> Iterator[None]:
        """Hold the dataset's retrain lock, or raise RetrainBusy at once (never waits)."""
        lock = FileLock(self.retrain_lock(dataset))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            raise RetrainBusy(f"another retrain of dataset {dataset!r} is running (lock "
                              f"{lock.lock_file}); this one changed nothing") from None
        try:
            yield
        finally:
            lock.release()
