"""The house rules of CONVENTIONS.md "Layers": the import-linter layer contract, public names across modules, and
package imports at module top (outside `commands/`, which import lazily so `--help` stays fast)."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "cosingan_monai"
TEMPLATE = PACKAGE / "label" / "template"  # package data that runs only inside .venv-label


def _modules() -> list[Path]:
    """Every importable module of the package (the MONAI Label server template is data, not a module)."""
    return [p for p in sorted(PACKAGE.rglob("*.py")) if TEMPLATE not in p.parents]


def _own_imports(tree: ast.AST) -> list[tuple[ast.ImportFrom, bool]]:
    """(`from cosingan_monai... import ...` node, whether it sits inside a function) for one module."""
    found: list[tuple[ast.ImportFrom, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.ImportFrom) and (child.module or "").startswith("cosingan_monai"):
                found.append((child, in_function))
            visit(child, inside)

    visit(tree, False)
    return found


def test_layer_contract_is_kept() -> None:
    """lint-imports (import-linter, contract in setup.cfg) passes: no module imports a layer above its own."""
    exe = Path(sys.executable).with_name("lint-imports")
    # UTF-8 both ways: lint-imports prints a box-drawing banner, and a worker's locale may be ASCII
    env = {**os.environ, "PYTHONIOENCODING": "utf-8", "PYTHONUTF8": "1"}
    proc = subprocess.run(
        [str(exe)], cwd=REPO, capture_output=True, encoding="utf-8", errors="replace", env=env, timeout=120
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "0 broken" in proc.stdout


def test_no_private_names_across_modules() -> None:
    """Cross-module use goes through public names: no `from cosingan_monai.x import _private`."""
    offenders = []
    for path in _modules():
        for node, _ in _own_imports(ast.parse(path.read_text(encoding="utf-8"))):
            offenders += [
                f"{path.relative_to(REPO)}:{node.lineno} {a.name}" for a in node.names if a.name.startswith("_")
            ]
    assert not offenders, offenders


def test_package_imports_at_module_top_outside_commands() -> None:
    """Function-local imports of the package's own modules hide the dependency graph; only commands/ may (lazy CLI)."""
    offenders = []
    for path in _modules():
        if path.parent.name == "commands":
            continue
        for node, in_function in _own_imports(ast.parse(path.read_text(encoding="utf-8"))):
            if in_function:
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno} from {node.module}")
    assert not offenders, offenders


def test_the_checks_catch_a_violation(tmp_path: Path) -> None:
    """The AST scan itself finds a private and a function-local import (so the two tests above can fail)."""
    tree = ast.parse("def f():\n    from cosingan_monai.data.io import _x\n")
    [(node, in_function)] = _own_imports(tree)
    assert in_function and node.names[0].name == "_x"
