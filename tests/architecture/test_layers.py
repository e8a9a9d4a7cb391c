"""The package's imports point one way: each stage imports only from the stages before it.

Every import of a ``mixedmodels`` module is read from the source (at module level and
inside functions alike; imports under ``if TYPE_CHECKING:`` are for annotations only and do
not count). docs/architecture.md explains the order.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "mixedmodels"

#: The stages in data-flow order; a module may import from its own stage or earlier ones.
LAYERS: list[set[str]] = [
    {"errors", "tables", "datasets"},
    {"io"},
    {"formula"},
    {"design"},
    {"covariance"},
    {"linalg"},
    {"residual"},
    {"family"},
    {"objective"},
    {"optimize"},
    {"inference", "diagnostics", "plots", "describe"},
    {"results"},
    {"models"},
    {"api", "compat", "compat_results", "power_analysis"},
    {"report"},
    {"cli", "__main__", "__init__"},
]
RANK = {name: i for i, layer in enumerate(LAYERS) for name in layer}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Full names of the mixedmodels modules (or packages) that ``path`` imports."""
    tree = ast.parse(path.read_text())
    name = _module_name(path)
    is_package = path.name == "__init__.py"
    annotation_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            annotation_only.update(id(n) for n in ast.walk(node))
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in annotation_only:
            continue
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            if target == "mixedmodels" or target.startswith("mixedmodels."):
                for alias in node.names:
                    sub = f"{target}.{alias.name}"
                    sub_path = PACKAGE.parent / sub.replace(".", "/")
                    is_module = sub_path.with_suffix(".py").exists() or sub_path.is_dir()
                    found.add(sub if is_module else target)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("mixedmodels"))
    found.discard(name)
    return found


def _stage(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


GRAPH = {_module_name(p): _imports(p) for p in sorted(PACKAGE.rglob("*.py"))}


def test_every_stage_has_a_place_in_the_order():
    assert {_stage(m) for m in GRAPH} <= set(RANK), set(map(_stage, GRAPH)) - set(RANK)


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_imports_point_downstream_only(module):
    rank = RANK[_stage(module)]
    upstream = sorted(t for t in GRAPH[module] if t != "mixedmodels" and RANK[_stage(t)] > rank)
    assert not upstream, f"{module} imports later stages: {upstream}"


def test_no_import_cycles():
    """No module reaches itself through imports (function-level ones included)."""
    nodes = set(GRAPH)

    def targets(m: str) -> set[str]:
        # An import of a package counts as an import of its __init__.
        return {t for t in GRAPH[m] if t in nodes and t != "mixedmodels"}

    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for t in targets(m):
            if state.get(t) == 1:
                cycle = [*stack[stack.index(t) :], t]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(nodes):
        if m not in state:
            visit(m)


def test_io_holds_no_fitting_code():
    for module, targets in GRAPH.items():
        if _stage(module) == "io":
            assert not {t for t in targets if _stage(t) in {"models", "objective", "optimize"}}


def test_family_needs_only_errors_numpy_and_scipy():
    """Families and links are plain numerics: no design, no engine, no pandas."""
    for path in sorted((PACKAGE / "family").glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                allowed = {"__future__", "numpy", "scipy", "dataclasses", "typing", "math",
                           "collections", "warnings"}  # fmt: skip
                assert top in allowed or name == "mixedmodels.errors", f"{path.name}: {name}"
