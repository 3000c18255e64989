"""The early "nothing changed" decision (visiongate.nochange) on a real DVC project and a
real MLflow sqlite store: it answers "unchanged" only when the pinned data, the stage, the
params and the registered identity all agree, and `visiongate retrain` then ends before
Prefect starts. The registered versions carry real identity tags; no model is trained
(the decision reads tags, not weights)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from visiongate import nochange, versioning
from visiongate.config import load_params
from visiongate.lineage import lineage_tags, params_hash
from visiongate.paths import Project, registry_name
from visiongate.tracking import tracking_uri

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def _register_identity(project: Path, champion: bool) -> dict[str, str]:
    """Register one version per model task with this run's identity tags (what a retrain
    registers), the first as champion when asked; returns name -> version."""
    params = load_params(project / "params.yaml")
    uri = tracking_uri(project, params.mlflow)
    md5s = versioning.split_md5s(project, params.dataset)
    client, versions = MlflowClient(uri), {}
    for task, cfg in params.model_tasks().items():
        name = registry_name(params.dataset, task)
        tags = lineage_tags(project, params.dataset, md5s, params_hash(cfg), cfg.weights)
        client.create_registered_model(name)
        version = client.create_model_version(name, f"file://{project}/none", tags=tags)
        if champion:
            client.set_registered_model_alias(name, "champion", version.version)
        versions[name] = str(version.version)
    return versions


@pytest.fixture
def pinned(tiny_project) -> Path:
    versioning.reproduce(tiny_project, "shapes")  # the real `dvc repro` of the synth stage
    return tiny_project


def _check(project: Path):
    params = load_params(project / "params.yaml", deep=False)
    store = nochange.own_store(Project.at(project), params)
    return nochange.check(Project.at(project), params, store)


def test_unchanged_only_when_every_pin_and_identity_agrees(pinned):
    assert _check(pinned) is None  # nothing registered yet
    versions = _register_identity(pinned, champion=True)

    outcomes = _check(pinned)

    assert [(o.name, o.status, o.version, o.champion_version) for o in outcomes] == [
        (name, "unchanged", v, v) for name, v in versions.items()]


def test_an_edited_data_file_is_a_change(pinned):
    _register_identity(pinned, champion=False)
    image = next((pinned / "data/prepared/shapes/train/images").iterdir())
    image.write_bytes(image.read_bytes() + b"\0")

    assert _check(pinned) is None


@pytest.mark.parametrize("section, key, value", [
    ("detect", "epochs", 2),       # the model's params: another params hash
    ("synth", "seed", 7),          # the data stage's params: `dvc status` says it must rerun
])
def test_changed_params_are_a_change(pinned, section, key, value):
    _register_identity(pinned, champion=False)
    params = yaml.safe_load((pinned / "params.yaml").read_text())
    params[section][key] = value
    (pinned / "params.yaml").write_text(yaml.safe_dump(params))

    assert _check(pinned) is None


def test_a_hand_edited_exclusion_list_or_a_remote_store_leaves_it_to_the_flow(pinned,
                                                                              monkeypatch):
    _register_identity(pinned, champion=False)
    assert _check(pinned) is not None
    (pinned / "data/exclude").mkdir(parents=True)
    (pinned / "data/exclude/shapes.csv").write_text("split,image,annotation_id,reason\n")
    assert _check(pinned) is None  # not pinned with `dvc add`: the flow re-pins it
    (pinned / "data/exclude/shapes.csv").unlink()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # not this project's
    params = load_params(pinned / "params.yaml", deep=False)
    assert nochange.own_store(Project.at(pinned), params) is None


def test_the_command_line_answers_before_prefect_starts(pinned):
    versions = _register_identity(pinned, champion=True)
    env = {**os.environ, "PREFECT_API_URL": "http://127.0.0.1:9/api",  # nothing listens
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    code = ("import sys; from flows.cli import main; rc = main(sys.argv[1:]); "
            "print('imported:', sorted(m for m in ('prefect', 'mlflow', 'torch') "
            "if m in sys.modules)); sys.exit(rc)")

    done = subprocess.run([sys.executable, "-c", code, "retrain", "--root", str(pinned)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)

    assert done.returncode == 0, done.stderr[-2000:]
    for name, version in versions.items():
        assert f"{name}: nothing changed since v{version}" in done.stdout
    assert "imported: []" in done.stdout
