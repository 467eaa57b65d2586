"""The layout's contracts, read from the source: dependencies point one way, no import cycles,
and every "method.md N" the code cites is a section of the repository's own docs/method.md."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("hiclip", "induction", "viz")


def _modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = path
    return out


def _imports(path: Path, known: set[str]) -> set[str]:
    """Project modules a file imports anywhere (module level, TYPE_CHECKING blocks, functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        found.update(n for n in names if n in known)
    return found


MODULES = _modules()
GRAPH = {name: _imports(path, set(MODULES)) - {name} for name, path in MODULES.items()}


def test_dependencies_point_one_way():
    """hiclip <- induction <- viz <- app.py; only the command layer may use all of them."""
    wrong = []
    for name, deps in GRAPH.items():
        top = name.split(".")[0]
        command_layer = name.startswith(("hiclip.commands", "hiclip.cli"))
        for dep in deps:
            dep_top = dep.split(".")[0]
            if (top == "hiclip" and not command_layer and dep_top != "hiclip") or (top == "induction" and dep_top == "viz"):
                wrong.append(f"{name} imports {dep}")
    assert not wrong, wrong


def test_no_import_cycles_between_project_modules():
    def package_of(module: str) -> str:
        return module if module in MODULES and MODULES[module].name == "__init__.py" else ""

    graph = {n: {d for d in deps if not package_of(d)} for n, deps in GRAPH.items()}  # a package's __init__ re-exports
    cycles, state = [], {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == "open":
                cycles.append(path[path.index(dep):] + [dep] if dep in path else [node, dep])
            elif dep not in state:
                visit(dep, path + [dep])
        state[node] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, cycles


def test_cited_method_sections_exist_in_the_repository():
    method = ROOT / "docs" / "method.md"
    assert method.is_file(), "the repository carries its own docs/method.md"
    sections = {int(m) for m in re.findall(r"^## (\d+)\. ", method.read_text(), flags=re.M)}
    assert sections == {1, 2, 3, 4, 5, 6}
    cited = set()
    sources = list(MODULES.values()) + [ROOT / "app.py", ROOT / "README.md", ROOT / "docs" / "DESIGN.md"]
    for path in sources:
        text = path.read_text()
        assert "shared/docs" not in text, f"{path} points outside the repository"
        for match in re.finditer(r"method\.md(?:`)?,? (?:sections? )?(\d+)(?:\s*-\s*(\d+))?", text):
            low, high = int(match.group(1)), int(match.group(2) or match.group(1))
            cited.update(range(low, high + 1))
    assert cited and cited <= sections, sorted(cited - sections)


@pytest.mark.parametrize("name", ["hiclip.data.csv_reader", "hiclip.data.open"])
def test_the_csv_reader_and_open_dataset_do_not_import_each_other_both_ways(name):
    other = {"hiclip.data.csv_reader": "hiclip.data.open", "hiclip.data.open": "hiclip.data.csv_reader"}[name]
    assert not (other in GRAPH[name] and name in GRAPH[other])
