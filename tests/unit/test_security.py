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


# ---- loading a model never executes code (#20) ------------------------------------------
YOLO_PY = REPO / "visiongate" / "models" / "yolo.py"
# yolo_classify.py imports ultralytics' ClassificationTrainer only inside train(), after
# yolo._ultralytics() has enforced safe loading
ULTRALYTICS_IMPORTERS = {YOLO_PY, REPO / "visiongate" / "models" / "ultralytics_safe.py",
                         REPO / "visiongate" / "models" / "yolo_classify.py"}


def _imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            roots.add(node.module.split(".")[0])
    return roots


def test_only_the_ultralytics_family_imports_ultralytics():
    """Every ultralytics model in visiongate is built in yolo.py / yolo_classify.py, after
    _ultralytics()."""
    offenders = [str(p.relative_to(REPO)) for p in SOURCES
                 if p.parts[len(REPO.parts)] != "benchmarks" and p not in ULTRALYTICS_IMPORTERS
                 and "ultralytics" in _imported_roots(p)]
    assert offenders == []


def _function(tree: ast.AST, name: str) -> ast.FunctionDef:
    return next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == name)


def test_ultralytics_is_imported_with_safe_loading_enforced():
    body = _function(ast.parse(YOLO_PY.read_text()), "_ultralytics").body
    src = [ast.unparse(stmt) for stmt in body]
    env = next(i for i, s in enumerate(src) if s.startswith("os.environ[SAFE_LOAD_ENV] = '1'"))
    imported = next(i for i, s in enumerate(src) if s == "import ultralytics")
    enforced = next(i for i, s in enumerate(src) if s == "enforce()")
    assert env < imported < enforced


def test_every_ultralytics_model_construction_is_a_checked_load():
    """YOLO(...) / RTDETR(...) / cls(...) only inside `with refused_as_model_error(...)`;
    weights reach a model only through ultralytics_safe.load_weights (no `.load(` here)."""
    tree = ast.parse(YOLO_PY.read_text())
    guarded = {id(n) for w in ast.walk(tree) if isinstance(w, ast.With)
               and any("refused_as_model_error" in ast.unparse(i.context_expr) for i in w.items)
               for n in ast.walk(w)}
    builds = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and (
        (isinstance(n.func, ast.Attribute) and n.func.attr in ("YOLO", "RTDETR", "load"))
        or (isinstance(n.func, ast.Name) and n.func.id == "cls"))]
    assert builds, "no model construction found: update this test"
    for call in builds:
        assert not (isinstance(call.func, ast.Attribute) and call.func.attr == "load"), \
            f"yolo.py:{call.lineno}: model.load outside ultralytics_safe.load_weights"
        assert id(call) in guarded, f"yolo.py:{call.lineno}: {ast.unparse(call)} unguarded"
