"""One run changes an environment at a time, on every path: the command-line runs the approval messages
print (`dagster asset materialize`) run in their own process and never go through the run queue, so
each run takes its environment's lease (substrate/lease.py) before it reads the config or calls out."""

from __future__ import annotations

import pytest

import os
import subprocess
import sys
import time
from pathlib import Path

from dagster import DagsterInstance, DagsterRunStatus, RunsFilter

from tests.assets.conftest import dagster_home
from google.cloud import secretmanager_v1

from substrate.approval import DESTROY_VAR
from tests.conftest import ROOT, client_options

# Slow tier: processes and the fork's own scripts, end to end (CI runs it; see README, Tests).
pytestmark = pytest.mark.slow

PROJECT = "gpuplat-test"


def cli(gp, home: Path, select: str = "*", **env_vars: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "GPUPLAT_SANDBOX_DIR": str(gp.sandbox.state_dir),
           "GPUPLAT_ENVIRONMENTS": str(gp.platform.envs), "DAGSTER_HOME": str(home), **env_vars}
    return subprocess.Popen([sys.executable, "-m", "dagster", "asset", "materialize", "-m", "gpuplat_assets",
                             "--select", select, "--partition", "sandbox"], cwd=home, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(*procs: subprocess.Popen) -> list[str]:
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0] * len(procs), "\n----\n".join(o[-3000:] for o in outputs)
    return outputs


def version_counts(gp) -> dict[str, int]:
    sm = secretmanager_v1.SecretManagerServiceClient(**client_options(gp.admin.urls, "secretmanager"))
    return {s.name.rsplit("/", 1)[1]: len(list(sm.list_secret_versions(parent=s.name)))
            for s in sm.list_secrets(parent=f"projects/{PROJECT}")}


def wait_started(home: Path, timeout: float = 120.0) -> None:
    instance = DagsterInstance.from_config(str(home))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if instance.get_run_records(RunsFilter(statuses=[DagsterRunStatus.STARTED]), limit=1):
            return
        time.sleep(0.2)
    raise AssertionError(f"no run started in {home} within {timeout:.0f}s")


def test_two_command_line_materializations_at_once_make_one_set_of_changes(gp, tmp_path):
    """Measured before the lease: 68 mutating calls where one run makes 49, and secrets with a second
    version of another value. Now the second waits for the first, saying for which run, then finds
    everything done."""
    home = dagster_home(tmp_path)
    gp.admin.reset()
    outputs = finish(cli(gp, home), cli(gp, home))
    waited = [o for o in outputs if "waiting for run" in o]
    assert len(waited) == 1 and "one run changes an environment at a time" in waited[0]
    calls = gp.admin.calls()
    assert calls["container"]["methods"].get("CreateCluster") == 1
    assert calls["container"]["methods"].get("CreateNodePool") == 1  # the GPU pool; the CPU pool comes with the cluster
    assert set(version_counts(gp).values()) == {1}  # no secret got a second version
    gp.admin.reset()
    finish(cli(gp, home))
    assert gp.admin.calls()["_total"]["mutate"] == 0


def test_a_materialization_started_during_a_pause_waits_for_it_and_does_not_undo_it(gp, tmp_path):
    """Measured before the lease: a materialization racing a pause brought the cluster back after the
    pause said it succeeded. The second run waits for the pause, then reads the config as it is then."""
    assert gp.materialize().success
    home = dagster_home(tmp_path)
    gp.configure(lifecycle="paused")
    gp.admin.reset()
    pause = cli(gp, home, **{DESTROY_VAR: "1"})
    wait_started(home)
    second = cli(gp, home)
    paused, after = finish(pause, second)
    assert "deleting GKE cluster ai-dev" in paused
    assert "waiting for run" in after and "deleting" not in after
    clusters = gp.admin.calls()["container"]["methods"]
    assert clusters.get("CreateCluster") is None and clusters.get("DeleteCluster") == 1
    assert all(gp.checks(gp.drift_checks()).values())


def test_a_run_that_waits_too_long_stops_in_one_line_naming_the_other_before_any_call(gp, tmp_path):
    home = dagster_home(tmp_path)
    first = cli(gp, home)
    wait_started(home)
    second = cli(gp, home, "apis_enabled", GPUPLAT_LEASE_WAIT_S="0")
    out = second.communicate(timeout=300)[0]
    finish(first)
    assert second.returncode != 0
    line = next(x for x in out.splitlines() if "another run is changing this environment" in x)
    assert "is still in progress on sandbox" in line and "nothing was changed by this run" in line
    assert "Traceback" not in out
