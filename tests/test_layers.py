"""The house: every import in ``src/etcdiff`` (lazy ones inside functions included) points to the same layer or a
lower one, and no two modules import each other, directly or round a circle.

Layers, bottom up: policies (pure tensor math) < integration (hooks, sampler, adapters) < calibration <
api (registry, catalog, kinds, enable/disable) < tools (bench, CLI, embedded models).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PKG = "etcdiff"

#: module-name prefixes -> layer (the longest prefix wins)
LAYERS = {
    "etcdiff._package": 0,
    "etcdiff._numbers": 0,
    "etcdiff._files": 0,
    "etcdiff.policies": 0,
    "etcdiff.integration": 1,
    "etcdiff.calibration": 2,
    "etcdiff": 3,  # the package root and the api modules: registry, catalog, kinds, api
    "etcdiff.bench": 4,
    "etcdiff.cli": 4,
    "etcdiff.digits": 4,
    "etcdiff.scenes": 4,
    "etcdiff.unet_digits": 4,
    "etcdiff.models": 4,
    "etcdiff.metrics": 4,
    "etcdiff.closed_form": 4,
    "etcdiff.__main__": 4,
}
LAYER_NAMES = ["policies", "integration", "calibration", "api", "tools"]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def layer(module: str) -> int:
    best = max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len)
    return LAYERS[best]


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted((SRC / PKG).rglob("*.py"))}


def imports_of(module: str, path: Path, known: set[str]) -> set[str]:
    """The etcdiff modules that ``module`` imports anywhere in its file."""
    is_pkg = path.name == "__init__.py"
    base = module.split(".") if is_pkg else module.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == PKG)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = base[: len(base) - (node.level - 1)]
                target = ".".join(anchor + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != PKG:
                continue
            for alias in node.names:  # `from pkg import submodule` imports the submodule
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in known else target)
    return {m for m in found if m != module and m in known}


def graph() -> dict[str, set[str]]:
    mods = all_modules()
    known = set(mods)
    return {m: imports_of(m, p, known) for m, p in mods.items()}


def test_every_import_points_down_or_sideways():
    upward = [
        f"{m} ({LAYER_NAMES[layer(m)]}) imports {t} ({LAYER_NAMES[layer(t)]})"
        for m, targets in graph().items() for t in sorted(targets) if layer(t) > layer(m)
    ]
    assert not upward, "imports that point up a layer:\n" + "\n".join(upward)


def _cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in g.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def _without_package_reexports(g: dict[str, set[str]]) -> dict[str, set[str]]:
    """A package's ``__init__`` re-exporting its own modules is not a circle of concepts: drop the arrows from
    a package to the modules inside it."""
    return {m: {t for t in ts if not t.startswith(m + ".")} for m, ts in g.items()}


def test_no_import_cycles():
    cycles = _cycles(_without_package_reexports(graph()))
    assert not cycles, "modules that import each other: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_the_walker_sees_lazy_imports_and_layers():
    g = graph()
    assert "etcdiff.policies.step.base" in g["etcdiff.api"]
    assert layer("etcdiff.policies.step.etc") < layer("etcdiff.integration.step.sampler") < layer("etcdiff.calibration.profile")
    assert layer("etcdiff.registry") == 3 and layer("etcdiff.cli.generate") == 4
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.mark.parametrize("path", sorted((SRC / PKG).rglob("*.py")), ids=lambda p: str(p.relative_to(SRC)))
def test_no_module_is_longer_than_450_lines(path):
    n = len(path.read_text(encoding="utf-8").splitlines())
    assert n <= 450, f"{path.relative_to(SRC)} has {n} lines; split it by concept"


WINGS = ("etcdiff.integration.step", "etcdiff.integration.block", "etcdiff.integration.external")


def _wing(module: str) -> str | None:
    return next((w for w in WINGS if module == w or module.startswith(w + ".")), None)


def test_a_wing_never_imports_another_wing():
    crossing = [f"{m} imports {t}" for m, targets in graph().items() for t in sorted(targets)
                if _wing(m) and _wing(t) and _wing(m) != _wing(t)]
    assert not crossing, "integration wings that import each other:\n" + "\n".join(crossing)


@pytest.mark.parametrize("folder", sorted({p.parent for p in (SRC / PKG).rglob("*.py")}),
                         ids=lambda p: str(p.relative_to(SRC)))
def test_no_package_folder_holds_more_than_16_modules(folder):
    n = len(list(folder.glob("*.py")))
    assert n <= 16, f"{folder.relative_to(SRC)} holds {n} modules; split it into subpackages by kind"


def _assignments_and_defs() -> tuple[list[str], list[str]]:
    assigned, defined = [], []
    for path in sorted((SRC / PKG).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Assign):
                assigned += [f"{path.name}:{t.id}" for t in node.targets if isinstance(t, ast.Name)]
            elif isinstance(node, ast.FunctionDef):
                defined.append(f"{path.name}:{node.name}")
    return assigned, defined


def test_the_denoiser_lookup_lives_in_one_place():
    assigned, defined = _assignments_and_defs()
    assert [a for a in assigned if a.endswith(":DENOISER_NAMES")] == ["denoisers.py:DENOISER_NAMES"]
    assert [d for d in defined if d.endswith(":find_denoisers")] == ["denoisers.py:find_denoisers"]


def test_no_private_name_is_imported_across_folders():
    mods = all_modules()
    crossing = []
    for module, path in mods.items():
        here = path.parent
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.ImportFrom) and node.level):
                continue
            base = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
            target = ".".join(base[: len(base) - (node.level - 1)] + ([node.module] if node.module else []))
            target_path = mods.get(target)
            if target_path is None or target_path.parent == here:
                continue
            crossing += [f"{module} imports {a.name} from {target}" for a in node.names
                         if a.name.startswith("_") and not a.name.startswith("__")]
    assert not crossing, "private names imported from another folder:\n" + "\n".join(crossing)


def test_there_is_no_demo_package_and_no_mutable_method_list():
    assert not (SRC / PKG / "demo").exists()
    assert not (SRC / PKG / "_method_names.py").exists()
