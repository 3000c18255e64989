"""Imports read only their source (#20), through the real `visiongate data import`,
`validate` and `stats` in a real DVC repo: one hostile COCO import shared by the module
(`..` and absolute file_names, links to an outside file and folder, a link loop, a
dangling link, a mode-600 image), then refusals against that project, and one project
whose imports fail. Each test also checks that nothing outside the project was read or
written and that the source kept its bytes and modes (`assert_untouched`).
"""

from __future__ import annotations

import json
import shlex
from types import SimpleNamespace

import import_sandbox as sandbox
import pytest
import yaml

from flows.cli import main
from visiongate.datasets.prepare import tree_md5
from visiongate.datasets.validate import read_quarantine

pytestmark = pytest.mark.integration
projects = sandbox.load(sandbox.TESTS / "integration" / "conftest.py", "adversarial_projects")


def _state(h) -> tuple:
    return (tree_md5(h.src), sandbox.modes(h.src), sandbox.modes(h.outside),
            sandbox.atimes(h.outside), sandbox.modes(h.elsewhere),
            sorted(p.name for p in h.tmp.iterdir()))


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hostile")
    h = SimpleNamespace(tmp=tmp, outside=sandbox.make_outside(tmp / "outside"),
                        elsewhere=tmp / "elsewhere", src=tmp / "src")
    (h.elsewhere / "train").mkdir(parents=True)  # `data stats ../../../elsewhere` wrote here
    h.root = projects.make_project(tmp / "project", {
        **projects.TINY_PARAMS, "validation": {"max_quarantine_share": 0.9}})
    sandbox.writers.make_coco(h.src, n=6)
    ann = h.src / "train" / "instances_train.json"
    coco = json.loads(ann.read_text())
    h.hostile_names = ["../../outside/secret.png",  # from the source's folder
                       "../../../../../outside/secret.png",  # from data/raw/hostile/train
                       str(h.outside / "secret.png")]
    coco["images"] += [{"id": 100 + k, "file_name": n, "width": 64, "height": 48}
                       for k, n in enumerate(h.hostile_names)]
    ann.write_text(json.dumps(coco))
    h.links = sandbox.add_links(h.src / "train", h.outside)
    (h.src / "train" / "images" / "train1.png").chmod(0o600)
    h.before = _state(h)
    h.code = main(["data", "import", "--format", "coco", str(h.src), "--name", "hostile",
                   "--root", str(h.root)])
    h.raw, h.prepared = h.root / "data" / "raw" / "hostile", h.root / "data" / "prepared" / "hostile"
    return h


def assert_untouched(h) -> None:
    after = _state(h)
    assert after[:2] == h.before[:2], "the source changed"
    assert after[2] == h.before[2], "something was written outside the project"
    assert after[4:] == h.before[4:], "something was written beside the project"
    if sandbox.reads_are_recorded(h.root):
        assert after[3] == h.before[3], "a file outside the project was read"
    assert sandbox.copies_of_outside(h.root) == []


def _refused(h, capfd, argv: list[str], message: str) -> None:
    """argv exits 1 with a one-line error naming message, and writes nothing."""
    dvc_yaml, raw = (h.root / "dvc.yaml").read_text(), sandbox.modes(h.root / "data" / "raw")
    capfd.readouterr()
    assert main(argv) == 1
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("visiongate: error:") and message in err[0], err
    assert (h.root / "dvc.yaml").read_text() == dvc_yaml
    assert sandbox.modes(h.root / "data" / "raw") == raw
    assert_untouched(h)


def test_file_names_outside_the_source_are_quarantined(hostile):
    assert hostile.code == 0
    lines = read_quarantine(hostile.prepared / "quarantine.csv")
    outside = [i.detail for i in lines if i.kind == "outside_source"]
    assert len(outside) == len(hostile.hostile_names)
    assert all(i.action == "image_left_out" for i in lines if i.kind == "outside_source")
    assert_untouched(hostile)


def test_links_are_quarantined_and_the_raw_copy_holds_regular_files(hostile):
    lines = read_quarantine(hostile.prepared / "quarantine.csv")
    assert sorted(i.file for i in lines if i.kind == "symlink") == sorted(
        f"train/{rel}" for rel in hostile.links)
    entries = sandbox.entries(hostile.raw)
    assert entries and not any(p.is_symlink() for p in entries)
    assert len(entries) < 20, "the link loop grew the copy"
    assert (hostile.raw / "train" / "images" / "train1.png").stat().st_mode & 0o777 == 0o600
    assert_untouched(hostile)


def test_reimporting_a_source_with_dangling_links_keeps_the_copy(hostile, capfd):
    capfd.readouterr()
    assert main(["data", "import", "--format", "coco", str(hostile.src), "--name", "hostile",
                 "--root", str(hostile.root)]) == 0
    assert "same bytes" in capfd.readouterr().out
    assert [p.name for p in (hostile.root / "data" / "raw").iterdir()
            if p.name.startswith(".")] == []  # no temporary copy left
    assert_untouched(hostile)


def test_stage_command_is_quoted_and_params_with_shell_syntax_refused(hostile, capfd):
    cmd = yaml.safe_load((hostile.root / "dvc.yaml").read_text())["stages"]["prepare-hostile"]
    assert shlex.split(cmd["cmd"])[-2:] == ["--params", "params.yaml"]
    for params in ("params.yaml; touch PWNED; true", "$(touch PWNED).yaml", "../params.yaml",
                   str(hostile.outside / "secret.txt")):
        _refused(hostile, capfd, ["data", "import", "--format", "coco", str(hostile.src),
                                  "--name", "inj", "--params", params,
                                  "--root", str(hostile.root)], "--params")
    assert not list(hostile.tmp.rglob("PWNED"))
    assert "inj" not in (hostile.root / "dvc.yaml").read_text()


def test_a_name_with_a_newline_is_refused(hostile, capfd):
    _refused(hostile, capfd, ["data", "import", "--format", "coco", str(hostile.src),
                              "--name", "x\n", "--root", str(hostile.root)], "not a path")


def test_a_name_clash_is_refused_before_anything_is_written(hostile, capfd):
    _refused(hostile, capfd, ["data", "import", "--format", "coco", str(hostile.src),
                              "--name", "shapes", "--root", str(hostile.root)],
             "'synthesize'")
    assert not (hostile.root / "data" / "raw" / "shapes.dvc").exists()


def test_stats_and_validate_take_a_dataset_name_inside_the_project(hostile, capfd):
    root = str(hostile.root)
    for argv in (["data", "stats", "../../../elsewhere"], ["data", "validate", "../elsewhere"],
                 ["data", "stats", str(hostile.elsewhere)]):
        _refused(hostile, capfd, [*argv, "--root", root], "not a path")
    _refused(hostile, capfd, ["data", "stats", "hostile", "--out", str(hostile.elsewhere),
                              "--root", root], "outside the project")
    assert main(["data", "stats", "hostile", "--root", root]) == 0
    assert list((hostile.root / ".cache" / "stats" / "hostile").glob("*.png"))
    assert_untouched(hostile)


def test_a_failed_import_leaves_the_project_as_it_was(tmp_path, capfd):
    root = projects.make_project(tmp_path / "project", projects.TINY_PARAMS)
    good = sandbox.writers.make_yolo(tmp_path / "good", n=6)
    bad = sandbox.writers.make_yolo(tmp_path / "bad", n=6)
    for image in (bad / "images" / "train").iterdir():
        image.write_bytes(b"")  # nothing usable: the prepare stage fails
    assert main(["data", "import", "--format", "yolo", str(good), "--name", "tiny",
                 "--root", str(root)]) == 0
    raw = root / "data" / "raw"
    files = ["dvc.yaml", "dvc.lock", "data/raw/tiny.dvc"]
    before = {f: (root / f).read_text() for f in files}, tree_md5(raw), sandbox.modes(raw)
    for name, force in (("tiny", ["--force"]), ("bad", [])):  # a replacement, a new one
        capfd.readouterr()
        assert main(["data", "import", "--format", "yolo", str(bad), "--name", name,
                     "--root", str(root), *force]) == 1
        err = capfd.readouterr().err
        assert "no usable yolo image" in err and f"import of {name!r} undone" in err
        assert ({f: (root / f).read_text() for f in files}, tree_md5(raw)) == before[:2]
        assert sorted(sandbox.modes(raw)) == sorted(before[2])  # no leftover, no temp copy
