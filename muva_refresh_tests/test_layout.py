"""The layout holds: the engine stands without Dagster or pandas, functions stay short, SQL is written once."""

import ast
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "muva_refresh"
ENGINE = ("errors", "settings", "endpoint", "catalog", "graph", "masking", "guards", "copy", "subset", "policy",
          "refresh", "checks")
EDGE = ("resources", "assets", "sensors", "definitions", "runs", "storage", "cli")
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


def engine_sources() -> dict[str, ast.Module]:
    return {m: ast.parse((PACKAGE / f"{m}.py").read_text()) for m in ENGINE}


def test_no_engine_function_is_over_60_lines():
    long = [f"{m}.{node.name}: {node.end_lineno - node.lineno + 1} lines"
            for m, tree in engine_sources().items() for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 60]
    assert long == []


def test_no_sql_text_is_written_twice():
    texts = Counter()
    for path in PACKAGE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and SQL_START.match(node.value):
                texts[" ".join(node.value.split())] += 1
    assert [text for text, n in texts.items() if n > 1] == []


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


# Split in progress elsewhere: assets.build_table_assets (and its refresh_tables), sensors.build_deploy_sensor.
@pytest.mark.xfail(strict=False, reason="assets.build_table_assets, assets.build_table_assets.refresh_tables and "
                                        "sensors.build_deploy_sensor are over 60 lines until they are split")
def test_no_function_in_the_package_is_over_60_lines():
    long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
        long += functions_over(60, ast.parse(path.read_text()), module)
    assert long == []
