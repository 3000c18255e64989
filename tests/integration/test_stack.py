"""`visiongate up` / `down` (what `make up` / `make down` run): both servers on loopback,
Prefect's state inside the project, MLflow on the project's own store; down stops both."""

import json
import os
import urllib.request

import pytest

from flows.cli import main, use_local_stack
from visiongate import stack

pytestmark = [pytest.mark.integration, pytest.mark.server]


def _get(url: str, data: dict | None = None) -> dict:
    body = json.dumps(data).encode() if data is not None else None
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read() or b"null")


def test_up_serves_the_project_store_and_down_stops_both(tiny_project, monkeypatch, capsys):
    prefect_port, mlflow_port = stack.free_port(), stack.free_port()
    monkeypatch.setenv("VISIONGATE_PREFECT_PORT", str(prefect_port))
    monkeypatch.setenv("VISIONGATE_MLFLOW_PORT", str(mlflow_port))
    state_dir = tiny_project / ".cache" / "stack"
    try:
        assert main(["up", "--root", str(tiny_project)]) == 0
        out = capsys.readouterr().out
        assert f"http://127.0.0.1:{prefect_port}" in out and f"http://127.0.0.1:{mlflow_port}" in out
        pids = {name: stack.read_state(state_dir, name)["pid"] for name in ("prefect", "mlflow")}
        assert all(stack.alive(pid) for pid in pids.values())
        # Prefect keeps its database in the project; MLflow serves the project's sqlite store
        assert (tiny_project / ".prefect").is_dir()
        assert (tiny_project / "mlruns" / "mlflow.db").is_file()
        assert _get(f"http://127.0.0.1:{prefect_port}/api/health") is True
        experiments = _get(f"http://127.0.0.1:{mlflow_port}/api/2.0/mlflow/experiments/search",
                           {"max_results": 10})
        assert [e["name"] for e in experiments["experiments"]] == ["Default"]
        # visiongate commands in this project now report to this server, and make their
        # MLflow calls through this MLflow server
        assert stack.prefect_api_url(tiny_project) == f"http://127.0.0.1:{prefect_port}/api"
        monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
        use_local_stack(str(tiny_project))
        assert os.environ["MLFLOW_TRACKING_URI"] == f"http://127.0.0.1:{mlflow_port}"
        monkeypatch.delenv("MLFLOW_TRACKING_URI")
        # a second `up` finds both running and starts nothing new
        assert main(["up", "--root", str(tiny_project)]) == 0
        assert {n: stack.read_state(state_dir, n)["pid"] for n in pids} == pids
    finally:
        assert main(["down", "--root", str(tiny_project)]) == 0
    assert "prefect: stopped" in capsys.readouterr().out
    assert not any(stack.alive(pid) for pid in pids.values())
    assert stack.prefect_api_url(tiny_project) is None
    assert not stack.Server("mlflow", "127.0.0.1", mlflow_port).healthy(timeout=1)
    assert main(["down", "--root", str(tiny_project)]) == 0
    assert "prefect: was not running" in capsys.readouterr().out


def test_a_taken_port_is_a_clear_error(tmp_path):
    """Something else already answers on the port: no second server, a clear error."""
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    class Healthy(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    other = HTTPServer(("127.0.0.1", 0), Healthy)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    try:
        server = stack.Server("mlflow", "127.0.0.1", other.server_address[1])
        with pytest.raises(RuntimeError, match="already answers on .*choose another port"):
            stack.start(server, ["sleep", "60"], tmp_path / "state", {})
        assert stack.read_state(tmp_path / "state", "mlflow") is None  # nothing was started
    finally:
        other.shutdown()
