"""A dataset whose class list changes between imports: ids of the classes that stay are
kept, the retrain compares candidate and champion on the classes both know and flags the
new class, and a re-import that moves an id is never promoted automatically."""

import copy
from pathlib import Path

import numpy as np
import pytest
import yaml
from mlflow.tracking import MlflowClient
from PIL import Image

from conftest import TINY_PARAMS, make_project  # tests/integration/conftest.py
from flows.cli import main
from visiongate.datasets.coco import load_split

pytestmark = pytest.mark.integration


def _export(root: Path, names: list[str], seed: int = 0) -> Path:
    """A YOLO export: 16 images with one box of cat and dog each, and of any other class
    on every second image, each class at its own place and colour; data.yaml names."""
    rng = np.random.default_rng(seed)
    for k in range(16):
        pixels = rng.integers(0, 40, (64, 64, 3), np.uint8)
        lines = []
        for c, name in enumerate(names):
            if name not in ("cat", "dog") and k % 2:
                continue
            x, y = 4 + 20 * (sum(map(ord, name)) % 3), 4 + 20 * c
            pixels[y:y + 14, x:x + 14] = (60 + 60 * c) % 255
            lines.append(f"{c} {(x + 7) / 64:.6f} {(y + 7) / 64:.6f} {14 / 64:.6f} {14 / 64:.6f}")
        (root / "images").mkdir(parents=True, exist_ok=True)
        (root / "labels").mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(root / "images" / f"{k}.png")
        (root / "labels" / f"{k}.txt").write_text("\n".join(lines) + "\n")
    (root / "data.yaml").write_text(yaml.safe_dump({"names": names}))
    return root


def test_a_class_added_then_one_dropped(tmp_path, prefect_harness):
    params = copy.deepcopy(TINY_PARAMS)
    params["segment"]["enabled"] = False                        # boxes only
    params["detect"]["gate"].pop("robustness")
    root = make_project(tmp_path / "project", params)
    client = MlflowClient(f"sqlite:///{root / 'mlruns' / 'mlflow.db'}")

    def reimport(names: list[str]) -> None:
        src = _export(tmp_path / "-".join(names), names)
        assert main(["data", "import", "--format", "yolo", str(src), "--name", "parts",
                     "--root", str(root), "--force"]) == 0

    reimport(["cat", "dog"])
    assert main(["retrain", "--dataset", "parts", "--root", str(root)]) == 0

    # the new export lists its classes in another order and adds "bird": ids of cat and
    # dog stay, bird comes after them; the retrain compares on what both models know
    reimport(["bird", "dog", "cat"])
    assert (root / "data/classes/parts.txt").read_text() == "cat\ndog\n"
    assert load_split(root / "data/prepared/parts/test").class_names == ("cat", "dog", "bird")
    assert main(["retrain", "--dataset", "parts", "--root", str(root)]) == 0
    v2 = client.get_model_version_by_alias("parts-detect", "champion")
    assert str(v2.version) == "2"
    report = client.download_artifacts(v2.run_id, "gate_report.md", str(tmp_path))
    text = Path(report).read_text()
    assert "new since champion v1: bird (AP shown; no non-regression check on them)" in text
    assert "compared on the" in text and "test images that hold only classes both know" in text
    assert "| bird |" in text                                   # its AP is shown
    metrics = client.get_run(v2.run_id).data.metrics
    assert "test/ap/bird" in metrics

    # dog goes: bird's id moves 3 -> 2, which a client reading ids would not notice
    reimport(["cat", "bird"])
    assert main(["retrain", "--dataset", "parts", "--root", str(root)]) == 3
    refused = client.get_model_version_by_alias("parts-detect", "challenger")
    reasons = client.get_run(refused.run_id).data.tags["gate.reasons"]
    assert "class ids changed since champion v2 ('bird' 3→2)" in reasons
    assert str(client.get_model_version_by_alias("parts-detect", "champion").version) == "2"
