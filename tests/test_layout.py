"""The shape of the code base: module sizes, private names, the one adapter for dask internals.

These are the rules of the README's "Layout" section, checked on the source tree itself so that a
change that breaks one fails here rather than in review.
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "daskgmm"
ADAPTER = PACKAGE / "dask_compat.py"
MAX_LINES = 350
SOURCES = sorted([*PACKAGE.rglob("*.py"), *(ROOT / "tests").rglob("*.py"),
                  *(ROOT / "bench").glob("*.py")])


def relative(path):
    return path.relative_to(ROOT).as_posix()


def is_private(name):
    return name.startswith("_") and not name.startswith("__")


def private_imports(path):
    """``(line, text)`` for each private name taken from another module by ``path``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found, modules = [], {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            module = "." * node.level + (node.module or "")
            for alias in node.names:
                if is_private(alias.name) or any(map(is_private, module.split("."))):
                    found.append((node.lineno, f"from {module} import {alias.name}"))
                modules[alias.asname or alias.name] = module
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if any(map(is_private, alias.name.split("."))):
                    found.append((node.lineno, f"import {alias.name}"))
                modules[(alias.asname or alias.name).split(".")[0]] = alias.name
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and is_private(node.attr)
                and isinstance(node.value, ast.Name) and node.value.id in modules):
            found.append((node.lineno, f"{node.value.id}.{node.attr}"))
    return found


@pytest.mark.parametrize("path", SOURCES, ids=relative)
def test_no_private_name_crosses_modules(path):
    if path == ADAPTER:
        pytest.skip("the adapter is where dask's private APIs are used")
    crossing = [f"{relative(path)}:{line}: {text}" for line, text in private_imports(path)
                if text != "os._exit"]  # documented public API, underscore and all
    assert crossing == []


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=relative)
def test_module_is_small(path):
    assert len(path.read_text().splitlines()) <= MAX_LINES


def test_dask_internals_only_in_the_adapter():
    hits = {relative(path) for path in PACKAGE.rglob("*.py")
            if "_task_spec" in path.read_text() or "__self__" in path.read_text()}
    assert hits == {relative(ADAPTER)}


def test_the_job_schema_loads_no_dask():
    # Checking a YAML job must stay instant and work without a cluster library imported.
    program = ("import sys, daskgmm.config, daskgmm.options; "
               "print(sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed')))")
    loaded = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                            check=True, cwd=ROOT).stdout.strip()
    assert loaded == "[]"


def imported_modules(path):
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("name", ["kernels", "covariance"])
def test_block_math_knows_nothing_of_dask(name):
    imported = imported_modules(PACKAGE / f"{name}.py")
    assert not {module for module in imported if module.split(".")[0] in ("dask", "distributed")}
