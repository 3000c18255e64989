"""Promotion is all or nothing. A move that fails half-way puts the aliases back
(visiongate/moves.py); a step after the promotion that fails rolls the Prefect transaction
back and the previous champion is champion again (tasks/registry.py); an undo never undoes a
later move by someone else. Real sqlite store, real Prefect (test harness)."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from visiongate import moves, registry, tracking
from visiongate.config import MlflowConfig
from visiongate.errors import RegistryError

pytestmark = pytest.mark.integration
NAME = "shapes-detect"


def _store(tmp_path: Path, versions: int = 3) -> str:
    """A sqlite store with `versions` registered versions of NAME and v1 champion."""
    (tmp_path / "params.yaml").write_text("dataset: shapes\n")
    uri = tracking.tracking_uri(tmp_path, MlflowConfig())
    experiment = tracking.ensure_experiment(uri, tmp_path, MlflowConfig())
    run_id = tracking.start_run(uri, experiment, NAME, {}, {})
    for _ in range(versions):
        registry.register(uri, NAME, f"runs:/{run_id}/model", {"gate.passed": "true"})
    moves.promote(uri, NAME, "1", "initial champion")
    return uri


def _history(uri: str) -> list[tuple]:
    return [(m["action"], m["version"], m["replaced"]) for m in moves.history(uri, NAME)]


def test_a_failure_after_the_promotion_rolls_the_transaction_back(tmp_path, prefect_harness):
    from prefect import flow
    from prefect.transactions import transaction

    from tasks.registry import promote

    uri = _store(tmp_path)
    inside = []

    @flow
    def promote_then_fail_to_close_the_run():
        with transaction():
            promote(uri, NAME, "2", "gate passed")
            inside.append(moves.aliases(uri, NAME))
            raise RuntimeError("closing the MLflow run failed")

    with pytest.raises(RuntimeError, match="closing the MLflow run failed"):
        promote_then_fail_to_close_the_run()
    assert inside == [{"champion": "2", "previous-champion": "1"}]  # it had moved
    assert moves.aliases(uri, NAME) == {"champion": "1", "previous-champion": None}
    assert _history(uri) == [("promote", "1", None), ("promote", "2", "1"), ("undo", "1", "2")]
    assert "rolled back" in moves.history(uri, NAME)[-1]["reason"]


def test_a_committed_transaction_keeps_the_promotion(tmp_path, prefect_harness):
    from prefect import flow
    from prefect.transactions import transaction

    from tasks.registry import promote

    uri = _store(tmp_path)

    @flow
    def promote_and_close():
        with transaction():
            promote(uri, NAME, "2", "gate passed")

    promote_and_close()
    assert moves.aliases(uri, NAME) == {"champion": "2", "previous-champion": "1"}
    assert _history(uri) == [("promote", "1", None), ("promote", "2", "1")]


def test_a_move_that_fails_half_way_leaves_the_aliases_as_they_were(tmp_path, monkeypatch):
    uri = _store(tmp_path)

    def server_gone(self, *args, **kwargs):
        raise MlflowException("the tracking server went away")

    # the aliases have moved when the history write fails: the last step of a promotion
    monkeypatch.setattr(MlflowClient, "set_registered_model_tag", server_gone)
    with pytest.raises(MlflowException, match="went away"):
        moves.promote(uri, NAME, "2", "gate passed")
    assert moves.aliases(uri, NAME) == {"champion": "1", "previous-champion": None}

    monkeypatch.undo()  # the retry finds a clean state and records the whole move
    moves.promote(uri, NAME, "2", "gate passed, retried")
    assert moves.aliases(uri, NAME) == {"champion": "2", "previous-champion": "1"}
    assert _history(uri) == [("promote", "1", None), ("promote", "2", "1")]


def test_an_undo_never_undoes_a_later_move(tmp_path):
    uri = _store(tmp_path)
    ours = moves.promote(uri, NAME, "2", "gate passed")
    moves.promote(uri, NAME, "3", "someone else's promotion, after ours")
    with pytest.raises(RegistryError, match="moved by someone else"):
        moves.restore(uri, NAME, ours.before, "2", "our transaction rolled back")
    assert moves.aliases(uri, NAME) == {"champion": "3", "previous-champion": "2"}
    assert moves.restore(uri, NAME, moves.aliases(uri, NAME), "3", "nothing to do") is None
