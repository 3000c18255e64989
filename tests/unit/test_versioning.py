import pytest
import yaml

from visiongate.versioning import split_md5s


def _lock(tmp_path, outs):
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(
        {"schema": "2.0", "stages": {"synthesize": {"cmd": "x", "outs": outs}}}))


def test_split_md5s_reads_the_dir_hash_of_each_split(tmp_path):
    _lock(tmp_path, [{"path": f"data/prepared/shapes/{s}", "md5": f"{s}0123.dir", "hash": "md5"}
                     for s in ("train", "val", "test")])
    assert split_md5s(tmp_path, "shapes") == {"train": "train0123", "val": "val0123",
                                              "test": "test0123"}


def test_missing_split_is_named(tmp_path):
    _lock(tmp_path, [{"path": "data/prepared/shapes/train", "md5": "a.dir"}])
    with pytest.raises(ValueError, match=r"val,test"):
        split_md5s(tmp_path, "shapes")


def test_missing_lock_says_what_to_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="dvc repro"):
        split_md5s(tmp_path, "shapes")
