"""Security rules checked on the source itself: safe deserialisation, loopback servers,
and dependency pins that exclude known-bad releases."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SOURCES = sorted(p for folder in ("visiongate", "flows", "tasks", "benchmarks")
                 for p in (REPO / folder).rglob("*.py"))
# ultralytics releases that shipped a cryptominer (PyPI supply-chain incident, Dec 2024)
BAD_ULTRALYTICS = {"8.3.41", "8.3.42", "8.3.45", "8.3.46"}


def _calls(path: Path):
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner = node.func.value.id if isinstance(node.func.value, ast.Name) else None
            yield owner, node.func.attr, {k.arg: k.value for k in node.keywords}, node.lineno


def _true(node) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def test_sources_found():
    assert len(SOURCES) > 20 and REPO / "visiongate" / "metrics.py" in SOURCES


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(REPO)))
def test_no_unsafe_deserialisation(path: Path):
    for owner, attr, kwargs, line in _calls(path):
        where = f"{path.relative_to(REPO)}:{line}"
        if owner == "torch" and attr == "load":
            assert _true(kwargs.get("weights_only")), f"{where}: torch.load without weights_only=True"
        if owner in ("np", "numpy") and attr == "load":
            assert not _true(kwargs.get("allow_pickle")), f"{where}: np.load(allow_pickle=True)"
        assert not (owner == "pickle" and attr in ("load", "loads")), f"{where}: pickle.load"


def test_servers_bind_loopback_by_default():
    texts = {p: p.read_text() for p in [*SOURCES, REPO / "Makefile"]}
    for path, text in texts.items():
        assert "0.0.0.0" not in text, f"{path.relative_to(REPO)} binds every interface"
    for path, text in texts.items():
        for host in re.findall(r"--host[ =]+([^\s\"'}]+)", text):
            assert host in ("127.0.0.1", "localhost") or host.startswith("$"), (
                f"{path.relative_to(REPO)}: --host {host}")


def _pins(text: str) -> dict[str, str]:
    return {m.group(1).lower(): m.group(2)
            for m in re.finditer(r"^\s*\"?([A-Za-z0-9_.-]+)==([0-9][^\s\",;]*)", text, re.M)}


@pytest.mark.parametrize("source", ["pyproject.toml", "requirements.lock"])
def test_dependency_pins_exclude_known_bad_releases(source: str):
    pins = _pins((REPO / source).read_text())
    assert pins.get("ultralytics") and pins["ultralytics"] not in BAD_ULTRALYTICS
    major, minor = (int(x) for x in pins["mlflow"].split(".")[:2])
    assert (major, minor) >= (3, 11), f"{source}: mlflow {pins['mlflow']} < 3.11"
