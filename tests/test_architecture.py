"""Tier 1: the shape of the code (docs/architecture.md). Imports only go down the layers, no
module imports itself round a circle, the pure core never imports Pulumi, nothing reaches into
the SDK's private names, and modules and functions stay short enough to read at once."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CODE = [p for top in ("flakefleet", "components", "program") for p in (ROOT / top).rglob("*.py")] + [ROOT / "__main__.py"]
SCRIPTS = sorted((ROOT / "scripts").glob("*.py")) + sorted((ROOT / "bench").glob("*.py"))
# Every file parsed once, when the module is collected: CPython 3.11's ast.parse can fail with
# "SystemError: AST constructor recursion depth mismatch" after another test's deep recursion
# (seen after tests/test_upgrade.py in random order), so no test parses after others have run.
TREES = {path: ast.parse(path.read_text()) for path in CODE + SCRIPTS}

# Folder -> the folders its modules may import (besides their own). Mirrors docs/architecture.md.
LAYERS: dict[str, set[str]] = {
    "flakefleet": set(),
    "flakefleet.common": set(),
    "flakefleet.facts": set(),
    "flakefleet.config": {"flakefleet.facts"},
    "flakefleet.plan": {"flakefleet.config", "flakefleet.facts"},
    "flakefleet.nixos": {"flakefleet.plan", "flakefleet.config", "flakefleet.facts", "flakefleet.common"},
    "flakefleet.host": {"flakefleet.plan", "flakefleet.common"},
    "flakefleet.cluster": {"flakefleet.host", "flakefleet.plan", "flakefleet.common"},
    "flakefleet.pull": {"flakefleet.plan", "flakefleet.config", "flakefleet.facts", "flakefleet.common"},
    "flakefleet.delivery": {"flakefleet.pull", "flakefleet.cluster", "flakefleet.host", "flakefleet.plan",
                            "flakefleet.facts", "flakefleet.common"},
    "flakefleet.preview": {"flakefleet.nixos", "flakefleet.plan", "flakefleet.config", "flakefleet.facts",
                           "flakefleet.common"},
    "flakefleet.bootstrap": {"flakefleet.cluster", "flakefleet.host", "flakefleet.plan", "flakefleet.common"},
    "flakefleet.ops": {"flakefleet.delivery", "flakefleet.bootstrap", "flakefleet.cluster", "flakefleet.host", "flakefleet.plan",
                       "flakefleet.config", "flakefleet.facts", "flakefleet.common"},
}
FLAKEFLEET = {"flakefleet", *LAYERS}
ABOVE = {
    "flakefleet.__main__": FLAKEFLEET,  # the command line dispatches to any of them
    "components": FLAKEFLEET,
    "program": FLAKEFLEET,
    "__main__": FLAKEFLEET | {"components", "program"},
}
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 80


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def folder_of(module: str) -> str:
    """The layer a module belongs to: its folder under flakefleet/, or components/program/__main__."""
    parts = module.split(".")
    if parts[0] == "flakefleet" and len(parts) > 2 or module in LAYERS:
        return ".".join(parts[:2])
    return module if module in ABOVE else parts[0]


def runtime_imports(path: Path) -> set[str]:
    """Every module of ours `path` imports when it runs (a function's imports too; `if
    TYPE_CHECKING:` blocks are for type checkers only and are left out)."""
    tree = TREES[path]
    skip = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING"
            for body in node.body for n in ast.walk(body)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:  # `from package import module` imports the module, else the package
                found.add(f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in KNOWN else node.module)
    return {m for m in found if m in KNOWN}


KNOWN = {module_name(p) for p in CODE}
GRAPH = {module_name(p): runtime_imports(p) for p in CODE}


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_imports_only_go_down_the_layers(module):
    folder = folder_of(module)
    allowed = ABOVE.get(folder) if folder in ABOVE else LAYERS.get(folder)
    assert allowed is not None, f"{module}: in no layer of docs/architecture.md"
    wrong = sorted(m for m in GRAPH[module] if folder_of(m) != folder and folder_of(m) not in allowed)
    assert wrong == [], f"{module} ({folder}) imports from above or beside its layer: {wrong}"


def test_no_module_imports_itself_round_a_circle():
    state: dict[str, int] = {}
    circles: list[list[str]] = []

    def visit(module: str, trail: list[str]) -> None:
        state[module] = 1
        for dep in sorted(GRAPH.get(module, ())):
            if state.get(dep) == 1:
                circles.append(trail[trail.index(dep):] + [dep] if dep in trail else trail + [dep])
            elif dep not in state:
                visit(dep, trail + [dep])
        state[module] = 2

    for module in sorted(GRAPH):
        if module not in state:
            visit(module, [module])
    assert circles == []


@pytest.mark.parametrize("path", sorted((ROOT / "flakefleet").rglob("*.py")), ids=lambda p: module_name(p))
def test_the_pure_core_never_imports_pulumi(path):
    tree = TREES[path]
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert not [n for n in names if n.split(".")[0].startswith("pulumi")]


@pytest.mark.parametrize("path", CODE, ids=lambda p: module_name(p))
def test_no_private_names_of_the_sdk(path):
    """`_SECRET_KEYS` and the like change without notice: only the SDK's public names."""
    tree = TREES[path]
    bad = [f"from {n.module} import {a.name}" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
           and (n.module or "").startswith("pulumi") for a in n.names if a.name.startswith("_")]
    bad += [ast.unparse(n) for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr.startswith("_")
            and not n.attr.startswith("__") and "pulumi" in ast.unparse(n.value).split(".")[0]]
    pulumi_modules = {a.asname or a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
                      and (n.module or "").startswith("pulumi") for a in n.names}
    bad += [ast.unparse(n) for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr.startswith("_")
            and not n.attr.startswith("__") and isinstance(n.value, ast.Name) and n.value.id in pulumi_modules]
    assert bad == []


@pytest.mark.parametrize("path", CODE + SCRIPTS,
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_modules_and_functions_are_short_enough_to_read(path):
    text = path.read_text()
    assert text.count("\n") <= MAX_MODULE_LINES, f"{path.name}: {text.count(chr(10))} lines"
    long = [(n.name, n.end_lineno - n.lineno + 1) for n in ast.walk(TREES[path])
            if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n.end_lineno - n.lineno + 1 > MAX_FUNCTION_LINES]
    assert long == []


def test_one_component_per_file_named_as_its_type():
    """components/: each file one `flakefleet:index:X` component (its Args beside it)."""
    for path in sorted((ROOT / "components").glob("*.py")):
        if path.name == "__init__.py":
            continue
        tree = TREES[path]
        classes = [c for c in tree.body if isinstance(c, ast.ClassDef)
                   and any(ast.unparse(b) == "pulumi.ComponentResource" for b in c.bases)]
        assert len(classes) == 1, f"{path.name}: {[c.name for c in classes]}"
        assert f'"flakefleet:index:{classes[0].name}"' in path.read_text(), path.name


@pytest.mark.parametrize("module", ["flakefleet.delivery.runner", "flakefleet.delivery.cache", "flakefleet.cluster.kubeconfig"])
def test_the_commands_each_host_runs_stay_light(module):
    """One runner process per host: it loads the plan contract, not the config models (pydantic)
    or the planner, which its plan already holds the result of."""
    import subprocess
    import sys

    code = f"import sys, {module}; print(sorted(m for m in sys.modules if m.split('.')[0] == 'pydantic' " \
           f"or m.startswith(('flakefleet.config', 'flakefleet.plan.inventory', 'flakefleet.plan.specs'))))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


ARCHITECTURE = ROOT / "docs" / "architecture.md"


def doc_rows() -> dict[str, str]:
    """docs/architecture.md's table: folder (`flakefleet/x/`, `program/`, ...) -> its row's text."""
    rows = {}
    for line in ARCHITECTURE.read_text().splitlines():
        if match := re.match(r"\| `([^`]+)` \| (.*)", line):
            rows[match.group(1).rstrip("/")] = match.group(2)
    return rows


def test_the_architecture_page_names_every_folder_and_module_of_the_tree():
    """The page's table has a row per folder of flakefleet/ (and program/, components/), the layers
    above say what each may import, and every module is named in its folder's row, none that is
    not there."""
    rows = doc_rows()
    folders = {f"flakefleet/{p.name}" for p in (ROOT / "flakefleet").iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert folders <= set(rows), sorted(folders - set(rows))
    assert {f.replace("/", ".") for f in folders} == set(LAYERS) - {"flakefleet"}
    problems = []
    for folder in sorted(folders):
        row = rows[folder]
        modules = {p.name for p in (ROOT / folder).glob("*.py") if p.name != "__init__.py"}
        named = set(re.findall(r"`([a-z_]+\.py)`", row))
        problems += [f"{folder}: {m} is not on the page" for m in sorted(modules - named)]
        problems += [f"{folder}: the page names {m}, which is not there" for m in sorted(named - modules)]
        layer = f"flakefleet.{folder.split('/')[1]}"
        said = {f"flakefleet.{w}" for w in re.findall(r"[a-z]+", row.rsplit("|", 2)[-2])} & set(LAYERS)
        if said != LAYERS[layer]:
            problems.append(f"{folder}: the page says it may import {sorted(said)}, the layers {sorted(LAYERS[layer])}")
    assert problems == []


def test_the_diagram_has_every_folder():
    diagram = ARCHITECTURE.read_text().split("```mermaid", 1)[1].split("```", 1)[0]
    folders = sorted(p.name for p in (ROOT / "flakefleet").iterdir() if p.is_dir() and p.name != "__pycache__")
    assert [f for f in folders if f"{f}/" not in diagram] == []


PULUMI_CODE = [p for top in ("components", "program") for p in (ROOT / top).rglob("*.py")] + [ROOT / "__main__.py"]


@pytest.mark.parametrize("path", PULUMI_CODE, ids=lambda p: str(p.relative_to(ROOT)))
def test_outputs_are_combined_by_name_never_by_position(path):
    """`Output.all(a, b)` hands its callback a list read by index (`v[0]`, `v[5:]`); by name
    (`Output.all(a=..., b=...)`, `components.resolved`) a value cannot be taken for another."""
    positional = [node.lineno for node in ast.walk(TREES[path])
                  if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "all"
                  and ast.unparse(node.func.value).endswith("Output") and node.args]
    assert positional == []
