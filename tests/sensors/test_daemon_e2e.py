"""End to end with the real Dagster daemon: drift made behind gpuplat's back is fixed by a sensor run.

Everything is the production path: `python -m sandbox serve` as its own process on free ports, a
temporary DAGSTER_HOME with the repository's dagster.yaml (SQLite, QueuedRunCoordinator), the
`dagster asset materialize` CLI, `dagster-daemon run` over a workspace, and Google's own
ClusterManagerClient to verify the result. The commands run in a scratch directory so the
environment's kubeconfig (written under the relative `.gpuplat/kube`) never lands in the repository.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from dagster import AssetKey, DagsterInstance, DagsterRunStatus, RunsFilter
from dagster._core.instance.ref import InstanceRef
from dagster._core.scheduler.instigation import TickStatus
from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import container_v1

from substrate.approval import SENSOR_TAG
from substrate.workers import WORKER_TAG
from sensors.drift import TRIGGER
from tests.assets.conftest import Admin
from tests.conftest import ROOT, shipped_environment, stop_group

INTERVAL_S = 5
POOL = "projects/gpuplat-sandbox/locations/us-central1-a/clusters/ai-dev/nodePools/gpu-l4"
BIN = Path(sys.executable).parent


def _wait(predicate, timeout: float, what: str, interval: float = 0.5, on_timeout=lambda: ""):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"{what} did not happen within {timeout:.0f}s. {on_timeout()}")


@pytest.fixture
def deployment(tmp_path, sandbox_process):
    """A DAGSTER_HOME, an environments folder with the shipped sandbox config, a scratch cwd."""
    urls = sandbox_process.start()
    home = tmp_path / "dagster_home"
    home.mkdir()
    config = yaml.safe_load((ROOT / "dagster.yaml").read_text())
    storage = tmp_path / "storage"
    config["storage"]["sqlite"]["base_dir"] = str(storage)
    config["local_artifact_storage"]["config"]["base_dir"] = str(storage / "artifacts")
    config["compute_logs"]["config"]["base_dir"] = str(storage / "compute_logs")
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    envs = tmp_path / "environments"
    shipped_environment("sandbox", envs)
    work = tmp_path / "work"
    work.mkdir()
    workspace = tmp_path / "workspace.yaml"
    workspace.write_text(yaml.safe_dump({"load_from": [{"python_module": {
        "module_name": "gpuplat_assets.definitions", "working_directory": str(ROOT), "location_name": "gpuplat"}}]}))
    # The processes' own temporary directory: their discovery caches stay theirs (see conftest), and
    # the path stays short enough for the unix sockets Dagster puts there.
    scratch = Path(tempfile.mkdtemp(prefix="gpuplat-e2e-", dir="/tmp"))
    env = {k: v for k, v in os.environ.items() if k not in ("GPUPLAT_AUTO_APPROVE", "KUBECONFIG")}
    env.update(DAGSTER_HOME=str(home), GPUPLAT_ENVIRONMENTS=str(envs),
               GPUPLAT_SANDBOX_DIR=str(sandbox_process.state_dir), TMPDIR=str(scratch),
               GPUPLAT_DRIFT_INTERVAL_S=str(INTERVAL_S), PYTHONPATH=str(ROOT))
    yield {"urls": urls, "home": home, "env": env, "cwd": work, "workspace": workspace}
    shutil.rmtree(scratch, ignore_errors=True)


@contextlib.contextmanager
def _daemon(d: dict):
    """`dagster-daemon run` over the deployment's workspace; yields (process, instance, its log's tail)."""
    # The instance is opened before the daemon starts: two processes opening a fresh SQLite instance at
    # once both create its tables, and one fails ("table asset_daemon_asset_evaluations already exists").
    instance = DagsterInstance.from_ref(InstanceRef.from_dir(str(d["home"])))
    log = open(d["home"] / "daemon.log", "w")
    daemon = subprocess.Popen([str(BIN / "dagster-daemon"), "run", "-w", str(d["workspace"])], cwd=d["cwd"],
                              env=d["env"], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def daemon_log() -> str:
        log.flush()
        return (d["home"] / "daemon.log").read_text()[-4000:]

    try:
        yield daemon, instance, daemon_log
    finally:
        stop_group(daemon, grace=20)
        log.close()


def test_the_daemon_sees_injected_drift_and_its_run_fixes_it(deployment):
    d = deployment
    env, cwd = d["env"], d["cwd"]
    repo_kube = ROOT / ".gpuplat" / "kube" / "sandbox.kubeconfig"
    repo_kube_before = repo_kube.stat().st_mtime if repo_kube.exists() else None

    started = time.monotonic()
    done = subprocess.run([str(BIN / "dagster"), "asset", "materialize", "-m", "gpuplat_assets.definitions",
                           "--select", "*", "--partition", "sandbox"],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    materialize_s = time.monotonic() - started

    with _daemon(d) as (daemon, instance, daemon_log):
        def ticked():
            assert daemon.poll() is None, daemon_log()
            states = [s for s in instance.all_instigator_state() if s.name == "drift_sensor"]
            ticks = states and instance.get_ticks(states[0].instigator_origin_id, states[0].selector_id, limit=1)
            return ticks and ticks[0].status in (TickStatus.SKIPPED, TickStatus.SUCCESS)  # finished, in sync

        _wait(ticked, 120, "the drift sensor's first finished tick", on_timeout=daemon_log)

        Admin(d["urls"]).call("POST", "/sandbox/gke/drift/node-pool", {
            "cluster": POOL.rsplit("/nodePools/", 1)[0], "nodePool": "gpu-l4",
            "patch": {"autoscaling": {"minNodeCount": 1}}})
        injected = time.monotonic()

        def sensor_runs():
            return instance.get_runs(RunsFilter(tags={SENSOR_TAG: TRIGGER}))

        launched = _wait(sensor_runs, 2 * INTERVAL_S + 30, "a drift-sensor run", on_timeout=daemon_log)
        launch_s = time.monotonic() - injected
        assert len(launched) == 1
        run = launched[0]
        assert run.tags.get("dagster/partition") == "sandbox"
        assert run.asset_selection == {AssetKey("gpu_pool")}

        finished = _wait(lambda: (r := instance.get_run_by_id(run.run_id)) and r.is_finished and r, 120,
                         "the drift-sensor run to finish", on_timeout=daemon_log)
        fixed_s = time.monotonic() - injected
        assert finished.status == DagsterRunStatus.SUCCESS, [
            e.message for e in instance.all_logs(run.run_id) if e.is_dagster_event and e.dagster_event.is_failure]
        assert fixed_s <= 120

        gke = container_v1.ClusterManagerClient(transport="rest", credentials=AnonymousCredentials(),
                                                client_options=ClientOptions(api_endpoint=d["urls"]["container"]))
        pool = gke.get_node_pool(name=POOL)
        assert (pool.autoscaling.enabled, pool.autoscaling.min_node_count, pool.autoscaling.max_node_count) == (True, 0, 1)

        # The daemon persisted the sensor's observation: the UI shows when the drift was seen.
        seen = instance.fetch_observations(AssetKey("gpu_pool"), limit=5).records
        assert any(r.partition_key == "sandbox" and "plan_hash" in r.asset_observation.metadata for r in seen)
        # One drift, one run: later ticks (the drift is gone, or the same) requested nothing more.
        time.sleep(2 * INTERVAL_S)
        assert len(sensor_runs()) == 1
        print(f"\nmaterialize (CLI): {materialize_s:.1f}s; drift -> run launched: {launch_s:.1f}s; "
              f"drift -> fixed: {fixed_s:.1f}s (sensor interval {INTERVAL_S}s)")
    assert (cwd / ".gpuplat" / "kube" / "sandbox.kubeconfig").exists()
    after = repo_kube.stat().st_mtime if repo_kube.exists() else None
    assert after == repo_kube_before, "the test wrote the repository's own kubeconfig"


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            child = int(stat.parent.name)
            out += [child, *_children(child)]
    return out


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def test_a_run_whose_worker_was_killed_is_marked_failed(deployment):
    """A run worker killed mid-run (OOM, kill -9) leaves a FAILURE, never a run STARTED for ever. Here the
    code server that spawned the worker notices its child died (Dagster's orphaned-run check) and says
    which signal; where the code server dies too, the shipped dagster.yaml's run monitoring is what
    marks it (https://docs.dagster.io/deployment/execution/run-monitoring)."""
    d = deployment
    env, cwd = d["env"], d["cwd"]
    # Every Service Usage read fails for a while: gpuplat retries transient errors, so the run stays busy.
    Admin(d["urls"]).fault("serviceusage", "*", "503", count=10_000)
    with _daemon(d) as (daemon, instance, daemon_log):
        launched = subprocess.run([str(BIN / "dagster"), "job", "launch", "-w", str(d["workspace"]), "-j", "substrate",
                                   "--tags", '{"dagster/partition": "sandbox"}'],
                                  cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
        assert launched.returncode == 0, launched.stderr[-3000:]
        run = _wait(lambda: next(iter(instance.get_runs(RunsFilter(statuses=[DagsterRunStatus.STARTED]))), None),
                    120, "the run to start", on_timeout=daemon_log)
        # The code server runs the run in a multiprocessing child, which tails the run's compute logs.
        worker = _wait(lambda: next((_parent(p) for p in _children(daemon.pid)
                                     if _cmdline(p).startswith("tail ") and run.run_id in _cmdline(p)), None), 60,
                       "the run worker process", on_timeout=lambda: "\n".join(
                           _cmdline(p)[:200] for p in _children(daemon.pid)))
        assert "spawn_main" in _cmdline(worker), _cmdline(worker)
        os.kill(worker, signal.SIGKILL)
        killed = time.monotonic()
        failed = _wait(lambda: (r := instance.get_run_by_id(run.run_id)) and r.is_finished and r, 90,
                       "the killed run to be marked finished", on_timeout=daemon_log)
        assert failed.status == DagsterRunStatus.FAILURE
        messages = " ".join(e.message for e in instance.all_logs(run.run_id) if e.is_dagster_event)
        assert "SIGKILL" in messages and "marked as failed" in messages, messages[-2000:]
        print(f"\nkilled run worker -> run FAILURE in {time.monotonic() - killed:.1f}s")
    Admin(d["urls"]).call("DELETE", "/sandbox/faults")


def test_command_line_runs_killed_with_sigkill_are_marked_failed_and_free_the_queue(deployment):
    """`kill -9` of `dagster asset materialize` leaves its run STARTED: no launcher watches a command-line
    run, so Dagster's run monitoring never fails it, and with four of them the queue (max_concurrent_runs 4)
    launches nothing for any environment until max_runtime_seconds (two hours). The dead-runs sensor
    (sensors/dead_runs.py) marks each failed from its recorded worker; the queued run of another
    environment then starts."""
    d = deployment
    env, cwd = d["env"], d["cwd"]
    envs = Path(env["GPUPLAT_ENVIRONMENTS"])
    names = ["lab-a", "lab-b", "lab-c", "lab-d"]
    for name in [*names, "other"]:
        shipped_environment("sandbox", envs, name)
    # Every Service Usage call fails for a while: gpuplat retries transient errors, so each run stays busy.
    Admin(d["urls"]).fault("serviceusage", "*", "503", count=100_000)
    procs = [subprocess.Popen([str(BIN / "dagster"), "asset", "materialize", "-m", "gpuplat_assets.definitions",
                               "--select", "apis_enabled", "--partition", name], cwd=cwd, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
             for name in names]
    try:
        with _daemon(d) as (daemon, instance, daemon_log):
            def started():
                runs = instance.get_runs(RunsFilter(statuses=[DagsterRunStatus.STARTED]))
                # Each has reached its first step (its worker is recorded) before it is killed.
                return len(runs) == len(names) and all(r.tags.get(WORKER_TAG) for r in
                                                       (instance.get_run_by_id(r.run_id) for r in runs)) and runs

            cli_runs = _wait(started, 180, "four STARTED command-line runs", on_timeout=daemon_log)
            for p in procs:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
            killed = time.monotonic()
            queued = subprocess.run([str(BIN / "dagster"), "job", "launch", "-w", str(d["workspace"]), "-j", "substrate",
                                     "--tags", '{"dagster/partition": "other"}'],
                                    cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
            assert queued.returncode == 0, queued.stderr[-3000:]
            other = instance.get_runs(RunsFilter(tags={"dagster/partition": "other"}))[0]

            def all_failed():
                now = [instance.get_run_by_id(r.run_id) for r in cli_runs]
                return all(r.status == DagsterRunStatus.FAILURE for r in now) and now

            failed = _wait(all_failed, 300, "the killed runs to be marked failed", interval=2, on_timeout=daemon_log)
            marked_s = time.monotonic() - killed
            for run in failed:
                messages = " ".join(e.message for e in instance.all_logs(run.run_id) if e.is_dagster_event)
                assert "is gone (killed or crashed)" in messages, messages[-1500:]
            left_queue = _wait(lambda: instance.get_run_by_id(other.run_id).status != DagsterRunStatus.QUEUED, 120,
                               "the other environment's queued run to start", on_timeout=daemon_log)
            assert left_queue
            print(f"\n{len(names)} killed command-line runs marked failed {marked_s:.0f}s after kill -9; "
                  f"the queued run of another environment then started")
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
        Admin(d["urls"]).call("DELETE", "/sandbox/faults")
