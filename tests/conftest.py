"""Shared fixtures: every test that needs a cloud starts its own sandbox on free ports."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# The asset graph's partitions are the environment folders, read when gpuplat_assets is imported:
# tests get their own folder of environments, each test rewriting the config it uses.
TEST_ENVIRONMENTS = Path(tempfile.mkdtemp(prefix="gpuplat-test-envs-"))
ENV_NAMES = ("sandbox", "approval", "prod", "byo", "hetzner", "other", "broken")
for _name in ENV_NAMES:
    (TEST_ENVIRONMENTS / _name).mkdir()
    (TEST_ENVIRONMENTS / _name / "config.yaml").write_text("cluster: {projectID: placeholder}\n")
os.environ["GPUPLAT_ENVIRONMENTS"] = str(TEST_ENVIRONMENTS)

from sandbox.app import Sandbox  # noqa: E402

EPHEMERAL = {name: 0 for name in ("container", "serviceusage", "secretmanager", "compute", "kubernetes", "admin",
                                  "billing")}


@pytest.fixture
def sandbox(tmp_path):
    """An in-process sandbox on free ports with its state under tmp_path."""
    sb = Sandbox(tmp_path / "sandbox-state", ports=EPHEMERAL)
    sb.start(tmp_path / "sandbox-state" / "ports.json")
    yield sb
    sb.stop()


class SandboxProcess:
    """`python -m sandbox serve` as a child process, the way gpuplat starts it."""

    def __init__(self, state_dir: Path):
        self.state_dir = state_dir
        self.port_file = state_dir / "ports.json"
        self.proc: subprocess.Popen | None = None
        self.urls: dict[str, str] = {}

    def start(self) -> dict[str, str]:
        self.port_file.unlink(missing_ok=True)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sandbox", "serve", "--ephemeral-ports", "--state-dir", str(self.state_dir),
             "--port-file", str(self.port_file)],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 30
        while not self.port_file.exists():
            if self.proc.poll() is not None:
                raise RuntimeError(f"sandbox exited: {self.proc.stderr.read().decode()}")
            if time.monotonic() > deadline:
                raise RuntimeError("sandbox did not write its port file within 30 s")
            time.sleep(0.05)
        self.urls = json.loads(self.port_file.read_text())
        return self.urls

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def sandbox_process(tmp_path):
    sp = SandboxProcess(tmp_path / "sandbox-proc")
    sp.state_dir.mkdir(parents=True, exist_ok=True)
    yield sp
    sp.stop()
