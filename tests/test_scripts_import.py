"""Every committed measurement script still imports against the package (a renamed function breaks them silently:
nothing else runs them in CI)."""

import importlib
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


@pytest.mark.parametrize("name", sorted(p.stem for p in SCRIPTS.glob("*.py")))
def test_the_script_imports(name, monkeypatch):
    monkeypatch.syspath_prepend(str(SCRIPTS))
    sys.modules.pop(name, None)
    module = importlib.import_module(name)  # an ImportError or NameError fails here
    assert Path(module.__file__).resolve().parent == SCRIPTS


@pytest.mark.parametrize("path", sorted(SCRIPTS.glob("*.py")), ids=lambda p: p.stem)
def test_the_script_runs_nothing_at_import(path):
    """A script's work sits behind ``if __name__ == "__main__"``: importing it (as the test above does, and as other
    scripts import their neighbours) defines things and sets up ``sys.path``, and runs no experiment."""
    import ast

    body = ast.parse(path.read_text()).body
    loose = [f"line {n.lineno}: {ast.unparse(n).splitlines()[0]}" for n in body
             if not isinstance(n, (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.ClassDef, ast.Assign,
                                   ast.AnnAssign, ast.AugAssign))
             and not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))  # a docstring
             and not (isinstance(n, ast.Expr) and ast.unparse(n.value).startswith("sys.path.insert("))
             and not (isinstance(n, ast.If) and ast.unparse(n.test) in ("__name__ == '__main__'",))]
    assert not loose, f"{path.name} runs code at import: {loose}"
