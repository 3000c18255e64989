"""params.yaml `stack:` and `schedule:`: defaults, environment overrides, the deployments
they produce (schedules, concurrency), and clear errors."""

import pytest
import yaml
from pydantic import ValidationError

from visiongate import stack
from visiongate.config import Params


def test_defaults_bind_loopback_and_env_overrides_ports(monkeypatch):
    servers = stack.servers(Params().stack)
    assert {s.host for s in servers.values()} == {"127.0.0.1"}
    assert (servers["prefect"].port, servers["mlflow"].port) == (4200, 5000)
    monkeypatch.setenv("VISIONGATE_MLFLOW_PORT", "5999")
    monkeypatch.setenv("VISIONGATE_PREFECT_HOST", "localhost")
    servers = stack.servers(Params().stack)
    assert servers["mlflow"].url == "http://127.0.0.1:5999"
    assert servers["prefect"].url == "http://localhost:4200"


def test_bad_cron_and_port_are_clear_errors():
    with pytest.raises(ValidationError, match="needs five fields"):
        Params.model_validate({"schedule": {"retrain_cron": "nightly"}})
    with pytest.raises(ValidationError, match="less than or equal to 65535"):
        Params.model_validate({"stack": {"mlflow": {"port": 70000}}})
    with pytest.raises(ValidationError, match="Extra inputs"):
        Params.model_validate({"schedule": {"retrain_crn": "0 2 * * *"}})


def test_stop_without_a_server_says_so(tmp_path):
    assert stack.stop(tmp_path, "prefect") is False
    assert stack.prefect_api_url(tmp_path) is None


def test_deployments_follow_params(tmp_path):
    from flows.schedule import deployments

    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"schedule": {
        "retrain_cron": "30 1 * * 1-5", "evaluate_cron": "0 6 1 * *", "timezone": "Europe/Paris",
        "data_poll_minutes": 5}}))
    found = {d.name: d for d in deployments(tmp_path)}
    assert sorted(found) == ["on-demand", "poll", "scheduled", "weekly"]
    retrain = found["scheduled"]
    assert retrain.schedules[0].schedule.cron == "30 1 * * 1-5"
    assert retrain.schedules[0].schedule.timezone == "Europe/Paris"
    assert retrain.concurrency_limit == 1
    assert retrain.parameters == {"root": str(tmp_path), "params_file": "params.yaml"}
    assert found["weekly"].schedules[0].schedule.cron == "0 6 1 * *"
    assert found["poll"].schedules[0].schedule.interval.total_seconds() == 300
    assert not found["on-demand"].schedules

    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"schedule": {"data_poll_minutes": 0}}))
    assert "poll" not in {d.name for d in deployments(tmp_path)}
