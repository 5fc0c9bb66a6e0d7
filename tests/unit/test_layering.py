"""The layers stay apart: only resources/ talks to Google or Kubernetes; the sandbox imports nothing of gpuplat."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def imported_modules(folder: str) -> list[tuple[str, str]]:
    out = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                out += [(path.name, alias.name) for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                out.append((path.name, node.module))
    return out


@pytest.mark.parametrize("folder", ["gpuplat_assets", "sensors"])
def test_assets_and_sensors_never_import_a_google_or_kubernetes_client(folder):
    offenders = [(f, m) for f, m in imported_modules(folder)
                 if m.startswith(("google.cloud", "google.api_core", "kubernetes"))]
    assert offenders == []


def test_the_sandbox_imports_nothing_from_the_rest_of_gpuplat():
    offenders = [(f, m) for f, m in imported_modules("sandbox")
                 if m.split(".")[0] in ("gpuplat_assets", "resources", "sensors", "gpuplat_probe")]
    assert offenders == []


def test_the_probe_uses_the_standard_library_only():
    import sys
    offenders = [(f, m) for f, m in imported_modules("gpuplat_probe")
                 if m.split(".")[0] not in sys.stdlib_module_names and m.split(".")[0] != "gpuplat_probe"]
    assert offenders == []


def test_resources_never_read_an_environment_config_file():
    assert [(f, m) for f, m in imported_modules("resources") if m.startswith("gpuplat_assets")] == []


# ---- the sandbox's own layers ---------------------------------------------------------------------------
# Bottom to top; a module may import its own layer and the layers below, never one above
# (sandbox/__init__.py's docstring draws the picture).
SANDBOX_LAYERS = ("core", "wire", "stores", "apis", "sims", "admin", "app", "__main__")
MAX_MODULE_LINES = 600


def sandbox_modules() -> dict[str, Path]:
    out = {}
    for path in sorted((ROOT / "sandbox").rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def sandbox_import_graph() -> dict[str, set[str]]:
    """module -> the sandbox modules it imports, wherever the import stands (TYPE_CHECKING and
    function bodies included: an import is a dependency whether or not it runs at load time)."""
    modules = sandbox_modules()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for mod, path in modules.items():
        package = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[:len(base) - (node.level - 1)]
                    prefix = ".".join(base + ([node.module] if node.module else []))
                else:
                    prefix = node.module or ""
                targets = [prefix] + [f"{prefix}.{a.name}" for a in node.names]
            for target in targets:
                if target in modules and target != mod:
                    graph[mod].add(target)
    return graph


def layer_of(module: str) -> int:
    part = module.split(".")[1] if "." in module else "app"
    return SANDBOX_LAYERS.index(part)


def test_the_sandbox_imports_only_its_own_layer_and_those_below():
    graph = sandbox_import_graph()
    upward = sorted((m, t) for m, targets in graph.items() for t in targets
                    if m != "sandbox" and t != "sandbox" and layer_of(t) > layer_of(m))
    assert upward == []


def test_the_sandbox_has_no_import_cycle():
    graph = sandbox_import_graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles = []

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                cycles.append(path[path.index(t):] + [t] if t in path else [m, t])
            elif t not in state:
                visit(t, path + [t])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert cycles == []


def test_no_sandbox_module_is_over_600_lines():
    long = {m: n for m, p in sandbox_modules().items() if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert long == {}
