"""The house's own rules, checked where every developer runs the tests (CI checks them too).

No servers needed: these read the code, they do not run it.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from tests.support.paths import ROOT

PRODUCT = ("schemas", "infra", "illclient", "delivery", "settlement", "accounts", "broker",
           "web", "sim", "app")
MAX_MODULE_LINES = 700


def _modules() -> list[Path]:
    return sorted(p for pkg in PRODUCT for p in (ROOT / pkg).rglob("*.py"))


def test_layers_point_down() -> None:
    """pyproject.toml's import-linter contract: each layer imports only what is below it."""
    code = ("import sys; from importlinter.cli import lint_imports; "
            "sys.exit(lint_imports(no_cache=True, no_logo=True))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "KEPT" in done.stdout


def test_no_product_module_is_over_700_lines() -> None:
    long = {str(p.relative_to(ROOT)): n for p in _modules()
            if (n := len(p.read_text("utf-8").splitlines())) > MAX_MODULE_LINES}
    assert long == {}


def test_runtime_checks_raise_instead_of_asserting() -> None:
    """`assert` vanishes under `python -O`; in product code a check must raise."""
    found = []
    for path in _modules():
        tree = ast.parse(path.read_text("utf-8"), filename=str(path))
        found += [f"{path.relative_to(ROOT)}:{node.lineno}" for node in ast.walk(tree)
                  if isinstance(node, ast.Assert)]
    assert found == []
