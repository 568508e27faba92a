"""The analysis package sits below the training shell: nothing in it imports ``reverie.training``, not even
inside a function, and importing all of it (the report included) loads no training module."""

import ast
import subprocess
import sys
from pathlib import Path

import reverie.analysis

ROOT = Path(reverie.analysis.__file__).parent


def imported_modules(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
    return out


def test_no_module_of_reverie_analysis_imports_the_training_shell():
    offenders = {str(p.relative_to(ROOT)): sorted(m for m in imported_modules(p) if m.startswith("reverie.training"))
                 for p in ROOT.rglob("*.py")}
    assert {p: m for p, m in offenders.items() if m} == {}


def test_importing_the_whole_report_loads_no_training_module():
    code = ("import sys, reverie.analysis.report, reverie.analysis.modes, reverie.analysis.dmd; "
            "print(sorted(m for m in sys.modules if m.startswith('reverie.training')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
