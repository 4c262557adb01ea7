"""The source layout shows the architecture: no import cycle, subsystems in layers, small rooms.

Imports are read from the sources (module level, deferred into functions, and under
``TYPE_CHECKING`` alike: an arrow is an arrow), so a cycle hidden behind a lazy import fails too.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"
MAX_MODULE_LINES = 600
MAX_CLASS_LINES = 400

#: flamepy_fake's subsystems from the bottom up: each may import its own layer and those below.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("_errors", "_values", "_version", "_limits", "_addresses"),
    ("_control",),  # the state model, rules, records, policies, scheduler, servicer
    ("_options", "_home"),
    ("_toolkit",),  # faults, calls, introspection records, reports, worksets
    ("_install", "_flmping", "_flmexec"),
    ("_cache", "_executors"),
    ("_parts",),
    ("_cluster_toolkit", "_cluster"),
    ("__init__", "_backends", "_cli", "__main__", "_plugin", "plugin"),
)


def _modules() -> dict[str, tuple[Path, bool]]:
    found = {}
    for path in SRC.rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        found[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return found


MODULES = _modules()


def _imports(module: str) -> set[str]:
    """The modules of ours that ``module`` imports, anywhere in its source."""
    path, is_package = MODULES[module]
    package = module.split(".") if is_package else module.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            found |= {f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names}
    return {m for m in found if m in MODULES and m != module}


GRAPH = {module: _imports(module) for module in MODULES}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    components = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in graph.get(node, ()):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while (top := stack.pop()) != node:
                component.append(top)
            if component:
                components.append(sorted([node, *component]))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def _subsystem(module: str) -> str:
    parts = module.split(".")
    return "__init__" if len(parts) == 1 else parts[1]


def test_the_scan_reads_imports_of_every_kind() -> None:
    assert "flamepy_fake._executors._zygote_pool" in GRAPH["flamepy_fake._executors._manager"]  # top level
    assert "flamepy_fake._toolkit._introspect" in GRAPH["flamepy_fake._cluster_toolkit"]  # TYPE_CHECKING
    assert "flamepy_fake._executors._visible" in GRAPH["flamepy_fake._executors._import_scope"]  # deferred
    assert "flamepy_runner._proto._flame_v1" in GRAPH["flamepy_runner._proto"]  # from . import module


def test_no_module_imports_itself_back() -> None:
    assert _cycles(GRAPH) == []
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]  # it can fail


def test_the_fakes_subsystems_import_only_their_layer_and_those_below() -> None:
    layer = {name: depth for depth, names in enumerate(LAYERS) for name in names}
    fake = [m for m in GRAPH if m.split(".")[0] == "flamepy_fake"]
    assert {_subsystem(m) for m in fake} == set(layer)  # every subsystem has its place
    upward = sorted(
        (a, b)
        for a in fake
        for b in GRAPH[a]
        if b.split(".")[0] == "flamepy_fake" and layer[_subsystem(b)] > layer[_subsystem(a)]
    )
    assert upward == []


def test_the_control_plane_speaks_no_transport_but_in_its_servicer() -> None:
    # pb (the protobuf messages) is data, not transport: the state keeps upstream's values.
    checked = 0
    for module in (m for m in MODULES if m.startswith("flamepy_fake._control.")):
        path = MODULES[module][0]
        tree = ast.parse(path.read_text())
        names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        heavy = {n for n in names if n.split(".")[0] in ("grpc", "pyarrow")}
        assert heavy == ({"grpc"} if module.endswith("._frontend") else set()), module
        checked += 1
    assert checked >= 10  # every module of the folder was read


def test_modules_and_classes_stay_small() -> None:
    big_modules = {
        m: n for m, (p, _) in MODULES.items() if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert big_modules == {}
    big_classes = {}
    for module, (path, _) in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.ClassDef)
                and (size := node.end_lineno - node.lineno + 1) > MAX_CLASS_LINES
            ):  # type: ignore[operator]
                big_classes[f"{module}.{node.name}"] = size
    assert big_classes == {}
    assert len(MODULES) > 80  # the scan found the sources
