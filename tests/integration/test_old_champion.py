"""A champion that can no longer be loaded (here: a checkpoint written before
`format_version` existed) stops neither the retrain nor the champion: the candidate is
registered, refused with the reason, and the champion stays until a person promotes."""

import json

import pytest
import yaml
from mlflow.tracking import MlflowClient

from visiongate.config import load_params
from visiongate.tracking import tracking_uri

pytestmark = pytest.mark.integration


def test_unloadable_champion_refuses_automatic_promotion(tiny_project, prefect_harness):
    from flows.retrain import retrain

    params = yaml.safe_load((tiny_project / "params.yaml").read_text())
    params["detect"]["enabled"] = False
    (tiny_project / "params.yaml").write_text(yaml.safe_dump(params))
    (first,) = retrain(str(tiny_project))
    assert first.status == "promoted"

    stored = list((tiny_project / "mlruns").rglob("meta.json"))
    assert stored, "the registered checkpoint's meta.json is in the artifact store"
    for path in stored:  # what an older visiongate wrote: no format_version
        meta = json.loads(path.read_text())
        meta.pop("format_version", None)
        path.write_text(json.dumps(meta))

    (second,) = retrain(str(tiny_project), force=True)
    assert second.status == "refused" and second.champion_version == first.version
    assert second.champion_metrics is None
    (check,) = [c for c in second.verdict.checks if c.name == "champion"]
    assert "format version" in check.detail and "promote by hand" in check.detail
    client = MlflowClient(tracking_uri(tiny_project, load_params(tiny_project / "params.yaml").mlflow))
    champion = client.get_model_version_by_alias(first.name, "champion")
    assert str(champion.version) == first.version
