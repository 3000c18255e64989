"""The per-image records a bootstrap resamples (visiongate.bootstrap) and their file: an
.npz written by np.savez_compressed and read without unpickling, its claimed size bounded
and its arrays checked before any metric is computed from them.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from visiongate import coco_records
from visiongate.errors import DataError, NotFound

KINDS = ("detect", "instance", "segment", "classify", "multilabel")
MAX_RECORDS_BYTES = 1 << 30   # uncompressed size a records file may claim


@dataclass(frozen=True, eq=False)
class Records:
    """Everything needed to recompute the metrics on any resample of the test images.

    ``image_ids``: the test images in split order (the pairing key: counts column n is
    image_ids[n]). ``arrays`` (numbers, plus the ``class_names`` string array):
    detect/instance — ``box.*`` (and ``mask.*``) from coco_records.match_records,
    ``op.tp``/``op.pred``/``op.gt`` (N, K) per-image operating-point counts
    (diagnostics.per_image_counts); segment — ``px.tp``/``px.target``/
    ``px.pred`` (N, C) per-image pixel counts (confusion diagonal, row and column sums);
    classify — ``cls.probs`` (N, K) probabilities and ``cls.target`` (N,) class indices;
    multilabel — ``cls.probs``, ``cls.target`` (N, K) bool and ``cls.thresholds`` (K,)
    (visiongate.bootstrap_classify).
    """

    kind: str
    image_ids: tuple[int, ...]
    arrays: dict[str, np.ndarray]

    def save(self, path: Path) -> Path:
        """Write an .npz (np.savez_compressed) at exactly ``path``."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            np.savez_compressed(f, kind=np.asarray(self.kind),
                                image_ids=np.asarray(self.image_ids, dtype=np.int64),
                                **{f"a:{k}": v for k, v in self.arrays.items()})
        return path

    @classmethod
    def load(cls, path: Path) -> Records:
        """Read ``save``'s file without unpickling; NotFound / DataError naming the file."""
        path = Path(path)
        if not path.is_file():
            raise NotFound(f"{path}: no such records file")
        try:
            with zipfile.ZipFile(path) as z:
                claimed = sum(info.file_size for info in z.infolist())
            if claimed > MAX_RECORDS_BYTES:
                raise DataError(f"{path}: records claim {claimed} bytes, more than the "
                                f"{MAX_RECORDS_BYTES} allowed")
            with np.load(path, allow_pickle=False) as z:
                data = {k: z[k] for k in z.files}
            records = cls(str(data.pop("kind")), tuple(int(i) for i in data.pop("image_ids")),
                          {k[2:]: v for k, v in data.items() if k.startswith("a:")})
        except DataError:
            raise
        except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as err:
            raise DataError(f"{path}: not a bootstrap records file ({err})") from None
        _check(records, path)
        return records


def _check(records: Records, path) -> None:
    """DataError unless the arrays are consistent (indices in range, shapes agree)."""
    a, n = records.arrays, len(records.image_ids)
    try:
        if records.kind not in KINDS:
            raise ValueError(f"unknown kind {records.kind!r}")
        k = len(a["class_names"])
        if records.kind in ("classify", "multilabel"):
            return _check_classification(a, n, k, records.kind == "multilabel")
        prefixes = {"detect": ["box"], "instance": ["box", "mask"]}.get(records.kind, [])
        per_image = ["px.tp", "px.target", "px.pred"] if records.kind == "segment" else \
            ["op.tp", "op.pred", "op.gt"]
        for key in per_image:
            if a[key].shape != (n, k) or a[key].dtype.kind not in "iu" or (a[key] < 0).any():
                raise ValueError(f"{key} is not an ({n}, {k}) array of counts")
        for p in prefixes:
            coco_records.check({x.split(".", 1)[1]: v for x, v in a.items()
                                if x.startswith(f"{p}.")}, n, k)
    except (KeyError, ValueError, TypeError) as err:
        raise DataError(f"{path}: bad bootstrap records ({err})") from None


def _check_classification(a: dict[str, np.ndarray], n: int, k: int, multi_label: bool) -> None:
    """ValueError unless probabilities, targets (and thresholds) fit n images, k classes."""
    if a["class_names"].ndim != 1 or k < 1:
        raise ValueError("class_names is not a list of classes")
    probs, target = a["cls.probs"], a["cls.target"]
    if probs.shape != (n, k) or probs.dtype.kind != "f" or not np.isfinite(probs).all() \
            or (probs < 0).any() or (probs > 1).any():
        raise ValueError(f"cls.probs is not an ({n}, {k}) array of probabilities")
    if multi_label:
        if target.shape != (n, k) or target.dtype.kind != "b":
            raise ValueError(f"cls.target is not an ({n}, {k}) bool array")
        t = a["cls.thresholds"]
        if t.shape != (k,) or t.dtype.kind != "f" or not np.isfinite(t).all() \
                or (t < 0).any() or (t > 1).any():
            raise ValueError(f"cls.thresholds is not {k} thresholds within [0, 1]")
    elif target.shape != (n,) or target.dtype.kind not in "iu" or (target < 0).any() \
            or (target >= k).any():
        raise ValueError(f"cls.target is not {n} class indices below {k}")
