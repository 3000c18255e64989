"""Import hygiene: loading params.yaml stays light (no torch, cv2 or albumentations), config
imports only the dependency-free vocabulary, and the project's modules import no cycle."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("visiongate", "flows", "tasks")
HEAVY = ("torch", "cv2", "albumentations")
# stdlib only: config may import them
LEAVES = {"visiongate.errors", "visiongate.vocab", "visiongate.weights_rule"}


@pytest.mark.parametrize("call", ["load_params(path)", "load_params(path, deep=False)"])
def test_loading_params_imports_no_heavy_library(call):
    code = (f"import sys\nfrom visiongate.config import load_params\n"
            f"path = {str(REPO / 'params.yaml')!r}\n{call}\n"
            f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", f"{call} imported {out.stdout.strip()}"


def _modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _skipped(node: ast.If) -> bool:
    """`if __name__ == "__main__":` and `if TYPE_CHECKING:` bodies import nothing at run time."""
    test = ast.unparse(node.test).replace(" ", "")
    return test in ("TYPE_CHECKING", "typing.TYPE_CHECKING", "__name__=='__main__'",
                    '__name__=="__main__"')


def _imports(tree: ast.AST, module: str, is_package: bool, skip_functions=()) -> set[str]:
    """Dotted names a module imports anywhere (functions included), but not under the
    guards above nor inside the functions named in skip_functions."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _skipped(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and \
                node.name in skip_functions:
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".") if is_package else module.split(".")[:-1]
                package = package[:len(package) - (node.level - 1)]
                base = ".".join([*package, *([base] if base else [])])
            # pkg.sub when sub is a module, else (a name defined in pkg) pkg: see below
            found.update(f"{base}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def _project_targets(names: set[str], modules: dict[str, Path]) -> set[str]:
    """Each imported name -> the project module it loads (longest known prefix)."""
    out = set()
    for name in names:
        parts = name.split(".")
        for n in range(len(parts), 0, -1):
            if ".".join(parts[:n]) in modules:
                out.add(".".join(parts[:n]))
                break
    return out


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        names = _imports(tree, name, path.name == "__init__.py")
        graph[name] = _project_targets(names, modules) - {name}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (first module repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the DFS stack, 2: done
    stack: list[str] = []

    def dfs(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := dfs(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := dfs(node)):
            return found
    return None


def _within(graph: dict[str, set[str]], prefixes: tuple[str, ...]) -> dict[str, set[str]]:
    keep = {m for m in graph if m.split(".")[0] in prefixes}
    return {m: graph[m] & keep for m in keep}


def test_the_cycle_finder_finds_cycles():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_visiongate_modules_import_no_cycle():
    cycle = _cycle(_within(_graph(), ("visiongate",)))
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_flows_and_tasks_import_no_cycle():
    cycle = _cycle(_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_dependencies_point_flows_to_tasks_to_visiongate():
    order = {"flows": 2, "tasks": 1, "visiongate": 0}
    upward = sorted(f"{m} -> {t}" for m, targets in _graph().items() for t in targets
                    if order[t.split(".")[0]] > order[m.split(".")[0]])
    assert not upward, f"imports against flows -> tasks -> visiongate: {upward}"


def test_config_imports_only_the_vocabulary_outside_check_deep():
    modules = _modules()
    seen = {}
    for name in ("visiongate.config", "visiongate.config_models", *sorted(LEAVES)):
        tree = ast.parse(modules[name].read_text())
        names = _imports(tree, name, False, skip_functions=("check_deep",))
        seen[name] = _project_targets(names, modules)
    assert seen["visiongate.config"] <= LEAVES | {"visiongate.config_models"}, \
        seen["visiongate.config"]
    assert seen["visiongate.config_models"] <= LEAVES, seen["visiongate.config_models"]
    assert seen["visiongate.vocab"] <= {"visiongate.errors"}
    assert seen["visiongate.weights_rule"] <= {"visiongate.errors"}
    assert seen["visiongate.errors"] == set()


def test_the_vocabulary_matches_what_gives_it_meaning():
    from visiongate import vocab
    from visiongate.datasets.synth import SHAPES
    from visiongate.robustness import CORRUPTIONS

    assert tuple(SHAPES) == vocab.SHAPE_NAMES
    assert tuple(CORRUPTIONS) == vocab.CORRUPTION_NAMES
