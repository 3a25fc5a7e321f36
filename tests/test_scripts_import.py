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
