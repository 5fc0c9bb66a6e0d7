"""One way down: the layering of the whole tree, declared once (pyproject.toml's import-linter contracts).

gpuplat_assets (the code location) > sensors (the reactions) > substrate (the pieces and the engine) >
resources (the outside world); only resources/ imports Google's or Kubernetes' clients; the sandbox
and the GPU node probe stand alone; no import circle inside any package, function-level imports
included. Above resources/, an error is chosen by its class, never by its text.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MAX_MODULE_LINES = 600


def test_the_layering_contracts_hold():
    """`lint-imports` (import-linter, as kopf checks its layers) over pyproject.toml's contracts."""
    done = subprocess.run([str(Path(sys.executable).parent / "lint-imports")], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout and "7 kept" in done.stdout, done.stdout[-1500:]


def test_the_contracts_catch_a_function_level_circle(tmp_path):
    """The acyclic contract sees an import inside a function (a circle hidden from the module's top)."""
    import shutil
    for pkg in ("gpuplat_assets", "sensors", "substrate", "resources", "sandbox", "gpuplat_probe"):
        shutil.copytree(ROOT / pkg, tmp_path / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    pause = tmp_path / "substrate" / "pause.py"
    pause.write_text(pause.read_text() + "\n\ndef _circle():\n    from .cluster import PIECE\n    return PIECE\n")
    done = subprocess.run([str(Path(sys.executable).parent / "lint-imports")], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120, env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert done.returncode != 0 and "BROKEN" in done.stdout, done.stdout[-2000:]
    assert ".pause -> .cluster" in done.stdout


def test_the_reactions_import_first_in_a_fresh_interpreter():
    """Nothing below the code location imports it: `sensors.drift` loads alone, before gpuplat_assets."""
    code = "import sensors.drift, sys; assert 'gpuplat_assets' not in sys.modules; print('ok')"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


# What choosing a remedy by an error's text looks like: `"..." in str(exc)`, `"..." in kube.error`,
# `"..." in said`, `.startswith(ERR_...)`. Only resources/ may read the outside world's words (where no
# structured detail exists), and it turns them into classes (resources/errors.py).
ERROR_TEXT = re.compile(r"[\"'] in (str\(|[a-z_.]*error\b|said\b|msg\b|message\b)|\.startswith\(ERR_|in str\(e")


@pytest.mark.parametrize("package", ["gpuplat_assets", "sensors", "substrate"])
def test_no_remedy_is_chosen_by_an_error_text_above_resources(package):
    hits = [f"{p.relative_to(ROOT)}:{i}: {line.strip()}" for p in sorted((ROOT / package).rglob("*.py"))
            for i, line in enumerate(p.read_text().splitlines(), 1) if ERROR_TEXT.search(line)]
    assert hits == []


def test_the_error_text_rule_matches_what_it_forbids():
    for line in ('if "STOCKOUT" in str(exc):', 'if "not found" in kube.error:', 'elif "QUOTA" in said:',
                 "if kube.error.startswith(ERR_OTHER_CLUSTER):"):
        assert ERROR_TEXT.search(line), line
    assert not ERROR_TEXT.search('if "gpu" in node.labels:')


def test_the_probe_uses_the_standard_library_only():
    offenders = []
    for path in sorted((ROOT / "gpuplat_probe").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 else []
            offenders += [(path.name, n) for n in names
                          if n.split(".")[0] not in sys.stdlib_module_names and n.split(".")[0] != "gpuplat_probe"]
    assert offenders == []


@pytest.mark.parametrize("package", ["gpuplat_assets", "sensors", "substrate", "resources", "sandbox"])
def test_no_module_is_over_600_lines(package):
    long = {str(p.relative_to(ROOT)): n for p in sorted((ROOT / package).rglob("*.py"))
            if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert long == {}
