"""The layout holds: the engine stands without Dagster or pandas, functions stay short, SQL is written once."""

import ast
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "muva_refresh"
# In the order the data flows; a module imports only modules before it.
ENGINE = ("errors", "settings", "endpoint", "catalog", "graph", "shape", "policy", "masking", "subset", "shaping",
          "guards", "snapshot", "partitions", "stream", "digest", "compare", "indexes", "sequences", "views", "timings", "load",
          "leaks", "checks",
          "refresh")
EDGE = ("resources", "translator", "liveness", "assets", "sensors", "definitions", "runs", "storage", "instance",
        "cli")
SHAPING = ("shape", "policy", "masking", "subset", "shaping")
LOAD = ("snapshot", "partitions", "stream", "digest", "compare", "indexes", "sequences", "views", "timings", "load", "refresh")
SQL_START = re.compile(r"^\s*(SELECT|COPY|SET|TRUNCATE|DROP|CREATE|ALTER|INSERT|UPDATE|DELETE|WITH)\b")


def imported_after(module: str) -> set[str]:
    """Which of dagster and pandas a fresh interpreter holds after importing `module` alone."""
    code = (f"import sys, muva_refresh.{module}; "
            "print(' '.join(m for m in ('dagster', 'pandas') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(done.stdout.split())


@pytest.mark.parametrize("module", ENGINE + EDGE)
def test_each_module_imports_cleanly_on_its_own(module):
    found = imported_after(module)
    if module in ENGINE:
        assert found == set(), f"{module} pulls in {found}"
    # pandas only shows a failing check's sample rows: a passing refresh never imports it.
    assert "pandas" not in found, f"{module} pulls in pandas"


def test_no_sql_text_is_written_twice():
    texts = Counter()
    for path in PACKAGE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and SQL_START.match(node.value):
                texts[" ".join(node.value.split())] += 1
    assert [text for text, n in texts.items() if n > 1] == []


def package_imports(module: str) -> set[str]:
    """The package's own modules that `module` imports, by name."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            found.add((node.module or "").split(".")[0])
    return found - {""}


@pytest.mark.parametrize("module", ENGINE + EDGE)
def test_each_module_imports_only_modules_before_it(module):
    order = ENGINE + EDGE
    later = {m for m in package_imports(module) if m in order and order.index(m) >= order.index(module)}
    assert later == set(), f"{module} imports {later}, which come after it"


@pytest.mark.parametrize("module", SHAPING)
def test_shaping_imports_nothing_from_the_load(module):
    assert package_imports(module) & set(LOAD) == set()


def test_no_two_classes_share_a_name():
    seen: dict[str, list[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                seen.setdefault(node.name, []).append(str(path.relative_to(PACKAGE)))
    assert {name: places for name, places in seen.items() if len(places) > 1} == {}


def test_the_instance_config_stands_without_dagster():
    assert imported_after("instance") == set()


def imported_names(tree: ast.Module) -> set[str]:
    return {name for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))
            for name in [getattr(node, "module", None) or "", *(alias.name for alias in node.names)]}


def test_nothing_outside_the_demo_imports_the_dagster_dev_helper():
    importers = [str(path.relative_to(PACKAGE)) for path in PACKAGE.rglob("*.py") if path.parent != PACKAGE / "demo"
                 and any("dagster_dev" in name for name in imported_names(ast.parse(path.read_text())))]
    assert importers == []


def functions_over(limit: int, node: ast.AST, name: str) -> list[str]:
    """Every function under `node` longer than `limit` lines, by dotted name, nested ones included."""
    found = []
    for child in ast.iter_child_nodes(node):
        inner = name
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            inner = f"{name}.{child.name}"
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) and child.end_lineno - child.lineno >= limit:
            found.append(f"{inner}: {child.end_lineno - child.lineno + 1} lines")
        found += functions_over(limit, child, inner)
    return found


def test_no_function_in_the_package_is_over_60_lines():
    long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
        long += functions_over(60, ast.parse(path.read_text()), module)
    assert long == []
