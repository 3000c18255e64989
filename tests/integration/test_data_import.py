"""`visiongate data import|validate` through the real CLI in a real DVC repo."""

from __future__ import annotations

import copy
import shutil

import pytest
import yaml

from flows.cli import main
from conftest import TINY_PARAMS, make_project  # tests/integration/conftest.py
from visiongate.datasets.prepare import tree_md5
from visiongate.versioning import split_md5s

pytestmark = pytest.mark.integration


def _pins(root) -> dict[str, str]:
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    return {out["path"]: out["md5"] for stage in lock["stages"].values()
            for out in stage.get("outs", []) + stage.get("deps", [])}


def test_import_pins_raw_and_prepared_and_refuses_another_source(tmp_path, sources, capfd):
    params = copy.deepcopy(TINY_PARAMS)
    params["validation"] = {"max_quarantine_share": 0.2, "clip_tolerance": 0.02}
    root = make_project(tmp_path / "project", params)
    src = sources.make_yolo(tmp_path / "src", n=7, polygons=True)
    (src / "images" / "train" / "broken.png").write_bytes(b"")  # quarantined: 1 of 8
    before = tree_md5(src)
    dvc_yaml = (root / "dvc.yaml").read_text()

    assert main(["data", "import", "--format", "yolo", str(src), "--name", "tiny",
                 "--root", str(root)]) == 0
    assert tree_md5(src) == before
    pins = _pins(root)
    md5s = split_md5s(root, "tiny")
    for split in ("train", "val", "test"):
        assert pins[f"data/prepared/tiny/{split}"] == md5s[split] + ".dir"
    assert "data/raw/tiny" in pins and (root / "data" / "raw" / "tiny.dvc").is_file()
    assert "data/prepared/tiny/quarantine.csv" in pins
    assert (root / "dvc.yaml").read_text().startswith(dvc_yaml)  # comments and stages kept
    assert "prepare-tiny" in yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    assert "zero_byte" in (root / "data" / "prepared" / "tiny" / "quarantine.csv").read_text()

    capfd.readouterr()
    assert main(["data", "validate", "tiny", "--root", str(root)]) == 0
    out = capfd.readouterr().out
    assert "tiny: 7 images, 1 quarantined (12.5%)" in out and "zero_byte" in out

    other = sources.make_yolo(tmp_path / "other", n=8)
    raw_dvc = (root / "data" / "raw" / "tiny.dvc").read_text()
    assert main(["data", "import", "--format", "yolo", str(other), "--name", "tiny",
                 "--root", str(root)]) == 1
    assert "imported from a different source" in capfd.readouterr().err
    assert (root / "data" / "raw" / "tiny.dvc").read_text() == raw_dvc
    assert split_md5s(root, "tiny") == md5s


def test_import_failing_validation_is_a_clear_error(tmp_path, sources, capfd):
    root = make_project(tmp_path / "project", {**TINY_PARAMS,
                                               "validation": {"max_quarantine_share": 0.1}})
    src = sources.make_yolo(tmp_path / "src", n=3)
    shutil.copy(src / "data.yaml", src / "images" / "train" / "fake.png")
    assert main(["data", "import", "--format", "yolo", str(src), "--name", "bad",
                 "--root", str(root)]) == 1
    captured = capfd.readouterr()
    assert "max_quarantine_share" in captured.out + captured.err
    assert "visiongate: error:" in captured.err
