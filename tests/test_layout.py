"""The package's tiers: imports only point down, and no module imports itself back.

core -> what is trained (data, models, algorithms) and where a grid stands (progress) -> measure
-> one run (engine) -> many runs (tuning) and after the runs (report) -> faces (commands,
workflow, bench, cli). Every import
of a bpfree module counts, those inside functions and those under ``if TYPE_CHECKING:`` too: an
annotation naming a type of a higher tier ties the two modules as much as a call does."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "bpfree"

# a module's tier is its first package below bpfree
TIERS = {
    "core": 0,
    "data": 1,
    "models": 1,
    "progress": 1,
    "algorithms": 2,
    "measure": 2,
    "engine": 3,
    "tuning": 4,
    "report": 4,
    "workflow": 5,
    "commands": 6,
    "bench": 6,
    "cli": 7,
    "__main__": 8,
    "__init__": 0,
}
TORCH_FREE = ("core", "progress", "report")  # read on machines (and in the workflow's planning) without torch


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def tier(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def imports_of(path: Path, *, annotations: bool = True) -> set[str]:
    """Every module (bpfree's and others') imported anywhere in ``path``; with ``annotations``
    false, not those under TYPE_CHECKING (never imported when the code runs)."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if not annotations and _type_checking(child):
                continue
            if isinstance(child, ast.Import):
                found.update(alias.name for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                found.add(child.module)
                # ``from bpfree.engine import loop``: the submodule
                found.update(f"{child.module}.{alias.name}" for alias in child.names)
            visit(child)

    visit(ast.parse(path.read_text()))
    return found


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
GRAPH = {m: {i for i in imports_of(p) if i in MODULES and i != m} for m, p in MODULES.items()}


def test_every_module_sits_in_a_known_tier():
    assert {tier(m) for m in MODULES} <= set(TIERS), sorted({tier(m) for m in MODULES} - set(TIERS))


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down_or_stay_in_the_tier(module):
    up = [i for i in GRAPH[module] if TIERS[tier(i)] > TIERS[tier(module)] and tier(i) != "__init__"]
    assert not up, f"{module} imports a higher tier: {sorted(up)}"


def find_circle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of ``graph`` (its modules in order, the first repeated at the end), or None."""
    seen: dict[str, int] = {}  # 1: on the path, 2: done

    def walk(module: str, path: list[str]) -> list[str] | None:
        seen[module] = 1
        for target in sorted(graph[module]):
            if seen.get(target) == 1:
                return path[path.index(target) :] + [target]
            if target not in seen and (cycle := walk(target, path + [target])):
                return cycle
        seen[module] = 2
        return None

    for module in sorted(graph):
        if module not in seen and (cycle := walk(module, [module])):
            return cycle
    return None


def test_there_is_no_import_circle():
    cycle = find_circle(GRAPH)
    assert cycle is None, "import circle: " + " -> ".join(cycle or [])


@pytest.mark.parametrize("module", sorted(m for m in MODULES if tier(m) in TORCH_FREE))
def test_the_core_progress_and_report_do_not_import_torch(module):
    """Not even through another bpfree module: the tables and figures are built without torch."""
    reached, todo = set(), [module]
    while todo:
        current = todo.pop()
        if current in reached:
            continue
        reached.add(current)
        todo += GRAPH[current]

    def runs_torch(m: str) -> bool:
        return any(i.split(".")[0] == "torch" for i in imports_of(MODULES[m], annotations=False))

    torch_users = sorted(filter(runs_torch, reached))
    assert not torch_users, f"{module} reaches torch through {torch_users}"


def test_the_checks_can_fail(tmp_path):
    """A module that imports a higher tier, and a circle, are found in a made-up graph."""
    assert TIERS[tier("bpfree.tuning.job")] > TIERS[tier("bpfree.engine.run")]
    source = tmp_path / "m.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from bpfree.report import tables\n"
        "def f():\n    from bpfree.engine import run\n"
    )
    runtime = {"typing", "typing.TYPE_CHECKING", "bpfree.engine", "bpfree.engine.run"}
    assert imports_of(source, annotations=False) == runtime
    assert imports_of(source) == runtime | {"bpfree.report", "bpfree.report.tables"}
    made_up = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_circle(made_up) == ["a", "b", "c", "a"]
    assert find_circle({"a": {"b"}, "b": set(), "d": {"a", "b"}}) is None
