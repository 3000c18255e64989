"""The real retrain flow with non-default families: Faster R-CNN and Mask R-CNN."""

import pytest
import yaml
from mlflow.tracking import MlflowClient

from visiongate.config import load_params
from visiongate.tracking import tracking_uri

pytestmark = pytest.mark.integration


def test_retrain_flow_with_torchvision_families(tiny_project, prefect_harness):
    from flows.retrain import retrain

    project = tiny_project  # the tiny dataset, with the families switched in params.yaml
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["detect"] = {"family": "fasterrcnn", "epochs": 1, "imgsz": 64, "batch": 4,
                        "augment": [{"name": "HorizontalFlip", "p": 0.5}],
                        "gate": {"floors": {"map50": 0.0}}}
    params["segment"] = {"family": "maskrcnn", "epochs": 1, "imgsz": 64, "batch": 4,
                         "gate": {"floors": {"mask_map50": 0.0, "map50": 0.0}}}
    (project / "params.yaml").write_text(yaml.safe_dump(params))

    outcomes = retrain(str(project))

    client = MlflowClient(tracking_uri(project, load_params(project / "params.yaml").mlflow))
    assert [o["name"] for o in outcomes] == ["shapes-detect", "shapes-segment"]
    detect, segment = outcomes
    assert "map50" in detect["metrics"] and "mask_map50" not in detect["metrics"]
    assert "mask_map50" in segment["metrics"] and "map50" in segment["metrics"]
    for outcome, family in ((detect, "fasterrcnn"), (segment, "maskrcnn")):
        run = client.get_run(outcome["run_id"])
        assert run.info.status == "FINISHED"
        assert run.data.params[f"{outcome['name'].split('-')[1]}.family"] == family
        assert "val_map50" in run.data.metrics  # per-epoch metrics forwarded by the flow
        assert outcome["verdict"]["passed"], outcome["verdict"]
        version = client.get_model_version(outcome["name"], outcome["version"])
        assert "champion" in version.aliases
