"""The code's shape: the folders are the layers, each importing only the folders above it; no
import cycle (type-only imports count); yolobn modules import each other at module level (inside
functions only in cli/, where it keeps ``--help`` fast); no ``_private`` imports across modules;
modules under ~500 lines and functions under ~80; ``__all__`` in every public module."""

from __future__ import annotations

import ast
import re
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "yolobn"
README = Path(__file__).resolve().parents[1] / "README.md"


def _modules() -> dict[str, Path]:
    out = {}
    for p in PKG.rglob("*.py"):
        parts = p.relative_to(PKG.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = p
    return out


MODULES = _modules()


def _yolobn_imports(tree: ast.AST) -> list[tuple[ast.stmt, list[str], list[str]]]:
    """(statement, modules it imports, private names it imports) for each import of a yolobn module."""
    out = []
    for n in ast.walk(tree):
        if isinstance(n, ast.ImportFrom) and n.module and n.module.split(".")[0] == "yolobn":
            mods, private = [], []
            for a in n.names:
                sub = f"{n.module}.{a.name}"
                mods.append(sub if sub in MODULES else n.module)  # `from pkg import module`: the module only
                if a.name.startswith("_") and sub not in MODULES and a.name != "__version__":
                    private.append(sub)
            out.append((n, mods, private))
        elif isinstance(n, ast.Import):
            mods = [a.name for a in n.names if a.name.split(".")[0] == "yolobn"]
            if mods:
                out.append((n, mods, []))
    return out


def _imports(p: Path) -> tuple[set[str], list[str]]:
    """The yolobn modules ``p`` imports (anywhere in it, ``TYPE_CHECKING`` blocks included) and the
    private names it imports from them."""
    deps: set[str] = set()
    private: list[str] = []
    for _, mods, priv in _yolobn_imports(ast.parse(p.read_text())):
        deps.update(mods)
        private += priv
    return deps, private


def _graph() -> dict[str, set[str]]:
    graph = {m: {d for d in _imports(p)[0] if d in MODULES and d != m} for m, p in MODULES.items()}
    return {
        m: {d for d in ds if not m.startswith(d + ".")} for m, ds in graph.items()
    }  # a package's own init


def test_no_import_cycle():
    graph = _graph()
    state: dict[str, int] = {}
    cycles = []

    def visit(u: str, path: list[str]) -> None:
        state[u] = 1
        for v in sorted(graph[u]):
            if state.get(v) == 1:
                cycles.append(" -> ".join(path[path.index(v) :] + [u, v]) if v in path else f"{u} -> {v}")
            elif v not in state:
                visit(v, [*path, u])
        state[u] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [])
    assert cycles == []


def test_the_cycle_check_sees_type_only_imports(tmp_path):
    p = tmp_path / "m.py"
    p.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from yolobn.cli import main\n")
    assert _imports(p)[0] == {"yolobn.cli"}


def test_imports_between_yolobn_modules_are_at_module_level_outside_cli():
    inside = []
    for m, p in MODULES.items():
        if m.startswith("yolobn.cli"):
            continue
        tree = ast.parse(p.read_text())
        funcs = [f for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))]
        nested = {id(n) for f in funcs for n in ast.walk(f)}
        inside += [f"{m}:{s.lineno}" for s, _, _ in _yolobn_imports(tree) if id(s) in nested]
    assert inside == []


def test_no_private_imports():
    bad = {m: priv for m, p in MODULES.items() if (priv := _imports(p)[1])}
    assert bad == {}


def test_sizes():
    long_modules = {m: n for m, p in MODULES.items() if (n := len(p.read_text().splitlines())) > 520}
    long_functions = {}
    for m, p in MODULES.items():
        for n in ast.walk(ast.parse(p.read_text())):
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.end_lineno - n.lineno + 1 > 85:
                long_functions[f"{m}.{n.name}"] = n.end_lineno - n.lineno + 1
    assert long_modules == {} and long_functions == {}


# The layers, top to bottom (the README's layout): a module imports only from its own layer and the
# layers above it.
LAYERS = [
    "_version core data",
    "io",
    "bn",
    "run",
    "evaluate",
    "edit",
    "sweeps",
    "report",
    "integrations api",
    "cli",
]


def _layer(m: str) -> int | None:
    rank = {f"yolobn.{name}": i for i, line in enumerate(LAYERS) for name in line.split()}
    parts = m.split(".")
    return next(
        (rank[".".join(parts[:k])] for k in range(len(parts), 1, -1) if ".".join(parts[:k]) in rank), None
    )


def test_layers_import_only_upward():
    unplaced = sorted(m for m in MODULES if _layer(m) is None and m != "yolobn")
    assert unplaced == [], "place new modules in LAYERS (and in the README's layout)"
    upward = [
        f"{m} -> {d}"
        for m, p in MODULES.items()
        for d in _imports(p)[0]
        if (lm := _layer(m)) is not None and (ld := _layer(d)) is not None and ld > lm
    ]
    assert sorted(upward) == []


def test_the_readme_draws_the_layers_in_this_order():
    block = README.read_text().split("## Layout", 1)[1].split("```", 2)[1]
    drawn = re.findall(r"^  (\w+)(?:/|\.py)", block, flags=re.M)
    expected = [name for line in LAYERS for name in line.split() if not name.startswith("_")]
    assert drawn == expected


def _defines_names(p: Path) -> bool:
    """More than a docstring (a package's ``__init__`` that only describes its folder defines nothing)."""
    body = ast.parse(p.read_text()).body
    return any(not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)) for n in body)


def test_every_library_module_has_all():
    """The library's modules say what they export (the command line's are its commands: ``cli/__init__``)."""
    missing = sorted(
        m
        for m, p in MODULES.items()
        if not m.startswith("yolobn.cli.") and _defines_names(p)
        if not re.search(r"^__all__\b", p.read_text(), flags=re.M)
    )
    assert missing == []
