"""The code's shape (issue 10): no import cycle inside yolobn/, no module importing another module's
_private names, modules under ~500 lines and functions under ~80."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "yolobn"


def _modules() -> dict[str, Path]:
    out = {}
    for p in PKG.rglob("*.py"):
        parts = p.relative_to(PKG.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = p
    return out


MODULES = _modules()


def _imports(p: Path) -> tuple[set[str], list[str]]:
    """The yolobn modules ``p`` imports (anywhere in it) and the private names it imports from them."""
    deps, private = set(), []
    tree = ast.parse(p.read_text())
    typing_only = {  # imports under `if TYPE_CHECKING:` are types only: they never run, so they make no cycle
        id(m)
        for n in ast.walk(tree)
        if isinstance(n, ast.If) and ast.unparse(n.test) == "TYPE_CHECKING"
        for b in n.body
        for m in ast.walk(b)
    }
    for n in ast.walk(tree):
        if id(n) in typing_only:
            continue
        if isinstance(n, ast.ImportFrom) and n.module and n.module.split(".")[0] == "yolobn":
            for a in n.names:
                sub = f"{n.module}.{a.name}"
                deps.add(sub if sub in MODULES else n.module)  # `from pkg import module`: the module only
                if a.name.startswith("_") and sub not in MODULES and a.name != "__version__":
                    private.append(f"{n.module}.{a.name}")
        elif isinstance(n, ast.Import):
            deps |= {a.name for a in n.names if a.name.split(".")[0] == "yolobn"}
    return deps, private


def test_no_import_cycle():
    graph = {m: {d for d in _imports(p)[0] if d in MODULES and d != m} for m, p in MODULES.items()}
    graph = {
        m: {d for d in ds if not m.startswith(d + ".")} for m, ds in graph.items()
    }  # a package's own init
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


# The README's layout, top to bottom: a module imports only the layers above its own (and its own).
LAYERS = [
    "_version core data",
    "io",
    "bn",
    "run",
    "evaluate",
    "edit",
    "sweeps",
    "integrations api",
    "report",
    "cli",
]
# The README's two stated exceptions: result objects render themselves through these leaf modules,
# and the registry imports its builders when a variant is made.
UPWARD_OK = {"yolobn.report.export", "yolobn.report.notebook"}
UPWARD_PAIRS = {("yolobn.core.registry", "yolobn.edit.impls")}


def _layer(m: str) -> int | None:
    rank = {f"yolobn.{name}": i for i, line in enumerate(LAYERS) for name in line.split()}
    parts = m.split(".")
    return next(
        (rank[".".join(parts[:k])] for k in range(len(parts), 1, -1) if ".".join(parts[:k]) in rank), None
    )


def test_layers_import_only_upward():
    unplaced = sorted(m for m in MODULES if _layer(m) is None and m not in ("yolobn",))
    assert unplaced == [], "place new modules in LAYERS (and in the README's layout)"
    down = []
    for m, p in MODULES.items():
        for d in _imports(p)[0]:
            lm, ld = _layer(m), _layer(d)
            upward = lm is not None and ld is not None and ld > lm
            if upward and d not in UPWARD_OK and (m, d) not in UPWARD_PAIRS:
                down.append(f"{m} -> {d}")
    assert sorted(down) == []
    for leaf in UPWARD_OK:  # the leaves import nothing below the foundation at module level
        assert {
            d for d in _imports(MODULES[leaf])[0] if _layer(d) not in (0, LAYERS.index("report"), None)
        } == set()
