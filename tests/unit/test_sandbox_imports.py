"""The workflows' pass-through imports name modules in full. Inside
`workflow.unsafe.imports_passed_through()`, `from workflows import x` (x a module) is loaded
afresh in every workflow run's sandbox, because the sandbox re-imports the `workflows` package
the workflow module lives in: each run would execute x's body again (its dataclasses and all)
and each cached workflow would keep its own copy. `import workflows.x as x` is passed through."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import workflows

WORKFLOW_MODULES = [Path(workflows.__file__).parent / "lifecycle.py"]
WORKFLOW_MODULES.append(Path(workflows.__file__).parent / "subscription.py")


def passed_through_imports(path: Path) -> list[ast.ImportFrom]:
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.With) and "imports_passed_through" in ast.unparse(node.items[0]):
            found += [n for n in ast.walk(node) if isinstance(n, ast.ImportFrom)]
    return found


def test_no_module_is_imported_from_its_package_inside_the_pass_through_block() -> None:
    reloaded = []
    for path in WORKFLOW_MODULES:
        for node in passed_through_imports(path):
            for alias in node.names:
                name = f"{node.module}.{alias.name}"
                if node.module and importlib.util.find_spec(node.module) and _is_module(name):
                    reloaded.append(f"{path.name}: from {node.module} import {alias.name}")
    assert reloaded == []


def _is_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False
