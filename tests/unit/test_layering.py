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
