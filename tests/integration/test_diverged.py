"""A loss that turns NaN stops training with a clear error naming the epoch and step; the
last good checkpoint stays, the MLflow run is FAILED and nothing is registered."""

import math

import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from visiongate.config import load_params
from visiongate.errors import TrainingDiverged
from visiongate.tracking import tracking_uri

pytestmark = pytest.mark.integration


def test_nan_loss_stops_training_and_registers_nothing(tiny_project, prefect_harness,
                                                       monkeypatch):
    from flows.retrain import retrain
    from visiongate.models import unet

    params = yaml.safe_load((tiny_project / "params.yaml").read_text())
    params["detect"]["enabled"] = False
    params["segment"]["epochs"] = 2
    (tiny_project / "params.yaml").write_text(yaml.safe_dump(params))
    # 8 train images, batch 4: epoch 1 is 2 steps + 1 validation batch; NaN from epoch 2 on
    calls, forward = [], unet.SegLoss.forward

    def nan_from_epoch_two(self, logits, target):
        calls.append(1)
        loss = forward(self, logits, target)
        return loss * math.nan if len(calls) > 3 else loss

    monkeypatch.setattr(unet.SegLoss, "forward", nan_from_epoch_two)
    with pytest.raises(TrainingDiverged, match=r"loss is nan at epoch 2, step 1"):
        retrain(str(tiny_project))

    (work_dir,) = (tiny_project / ".cache" / "train").iterdir()
    last = torch.load(work_dir / "last.pt", map_location="cpu", weights_only=True)
    assert last["epoch"] == 1 and all(torch.isfinite(t).all() for t in
                                      last["state_dict"].values() if t.is_floating_point())
    client = MlflowClient(tracking_uri(tiny_project, load_params(tiny_project / "params.yaml").mlflow))
    assert client.search_model_versions("name='shapes-segment'") == []
    (run,) = client.search_runs([client.get_experiment_by_name("visiongate").experiment_id])
    assert run.info.status == "FAILED"
