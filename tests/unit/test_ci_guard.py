"""The CI guard of tests/conftest.py: under GPUPLAT_CI=1 a skip that is not on CI_ALLOWED_SKIPS fails the
run (a skip in CI is otherwise a silent pass), with xdist's workers as without them."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

# Slow tier: processes and the fork's own scripts, end to end (CI runs it; see README, Tests).
pytestmark = pytest.mark.slow


def run_inner(tmp_path, reason: str, ci: bool, *extra: str) -> subprocess.CompletedProcess:
    test = tmp_path / "test_inner.py"
    test.write_text(f"import pytest\n\n\ndef test_ok():\n    pass\n\n\ndef test_skips():\n    pytest.skip({reason!r})\n")
    env = {**os.environ, "GPUPLAT_CI": "1" if ci else ""}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "tests.conftest",
                           "--rootdir", str(tmp_path), "-c", os.devnull, *extra, str(test)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("extra", [(), ("-n", "2")], ids=["serial", "xdist"])
def test_a_skip_not_on_the_allow_list_fails_the_ci_run_and_names_the_test(tmp_path, extra):
    done = run_inner(tmp_path, "a service is down", True, *extra)
    assert done.returncode == 1, done.stdout[-2000:]
    assert "CI: 1 test(s) skipped without being on CI_ALLOWED_SKIPS" in done.stdout
    assert "test_inner.py::test_skips" in done.stdout


def test_an_allowed_skip_passes_and_outside_ci_any_skip_passes(tmp_path):
    allowed = run_inner(tmp_path, "no platform fork: none given", True)
    assert allowed.returncode == 0, allowed.stdout[-2000:]
    local = run_inner(tmp_path, "a service is down", False)
    assert local.returncode == 0 and "CI:" not in local.stdout, local.stdout[-2000:]
