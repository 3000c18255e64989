"""The real retrain flow with every non-default family: each detect family is paired with
a segment family so four flow runs cover all eight (yolo + unet: test_retrain_flow.py)."""

import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient

from visiongate import serving
from visiongate.config import load_params
from visiongate.tracking import tracking_uri

pytestmark = pytest.mark.integration

# The flow's code is the same for every family behind models.train / models.load; two pairs
# cover a torchvision detector and segmenter, a single-stage detector and YOLO-seg. Faster
# R-CNN, Mask R-CNN, RT-DETR and FCN (3.6 min more here) train, predict, save and load in
# tests/unit/test_families.py; benchmarks/bench_families.py trains and scores each one.
PAIRS = [("retinanet", "deeplabv3"), ("ssdlite", "yolo")]
INSTANCE = {"maskrcnn", "yolo"}


@pytest.mark.parametrize("detect_family,segment_family", PAIRS, ids=["+".join(p) for p in PAIRS])
def test_retrain_flow_with_each_family(tiny_project, prefect_harness, detect_family, segment_family,
                                      monkeypatch):
    import mlflow

    from flows.retrain import retrain

    project = tiny_project  # the tiny dataset, with the families switched in params.yaml
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["detect"] = {"family": detect_family, "epochs": 1, "imgsz": 64, "batch": 4,
                        "augment": [{"name": "HorizontalFlip", "p": 0.5}],
                        "gate": {"floors": {"map50": 0.0}}}
    instance = segment_family in INSTANCE
    params["segment"] = {"family": segment_family, "epochs": 1, "imgsz": 64, "batch": 4,
                         "gate": {"floors": {"mask_map50": 0.0, "map50": 0.0} if instance
                                  else {"miou": 0.0}}}
    (project / "params.yaml").write_text(yaml.safe_dump(params))

    outcomes = retrain(str(project))

    client = MlflowClient(tracking_uri(project, load_params(project / "params.yaml").mlflow))
    image = sorted((project / "data/prepared/shapes/test/images").glob("*.png"))[0]
    assert [o.name for o in outcomes] == ["shapes-detect", "shapes-segment"]
    detect, segment = outcomes
    assert "map50" in detect.metrics and "mask_map50" not in detect.metrics
    if instance:
        assert "mask_map50" in segment.metrics and "map50" in segment.metrics
    else:
        assert "miou" in segment.metrics and "map50" not in segment.metrics
    for outcome, family in ((detect, detect_family), (segment, segment_family)):
        run = client.get_run(outcome.run_id)
        assert run.info.status == "FINISHED"
        assert run.data.params[f"{outcome.name.split('-')[1]}.family"] == family
        assert any(m.step == 1 for k in run.data.metrics  # per-epoch metrics forwarded
                   for m in client.get_metric_history(outcome.run_id, k))
        assert outcome.verdict.passed, outcome.verdict
        version = client.get_model_version(outcome.name, outcome.version)
        assert "champion" in version.aliases
        # the champion loads by alias as an MLflow pyfunc and answers for a test image
        monkeypatch.setenv("MLFLOW_TRACKING_URI", client.tracking_uri)
        model = mlflow.pyfunc.load_model(f"models:/{outcome.name}@champion")
        (answer,) = model.predict(pd.DataFrame({"image": [serving.encode_image(image)]}),
                                  params={"min_score": 0.0})
        assert (answer["width"], answer["height"]) == (64, 64)
        key = "segments" if outcome is segment and not instance else "detections"
        assert isinstance(answer[key], list) and "error" not in answer
