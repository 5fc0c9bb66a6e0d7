"""Reactions that survive their own history: the real dagster-daemon through many report -> clear -> report
cycles, on SQLite and on PostgreSQL.

Users live in cycles: a GPU pool changed by hand, changed back and changed again; a paid change saved,
withdrawn and saved again; a GPU node held by a forgotten pod, released and held again. Dagster 1.13
cannot store a partitioned check result outside a run twice for one asset, check and partition
(`UNIQUE constraint failed: asset_check_executions...`), which once wedged both sensors on the second
cycle; gpuplat's sensors report through observations and checks-only runs instead
(sensors/tick.py `report_run`). Here `dagster-daemon run` drives the drift sensor and the
scale-to-zero guard (both at 5 s, the daemon's shortest sensor loop) over three copies of the shipped
sandbox environment in `remediation: report` mode, each with its own cluster and its own finding,
cycling side by side (the 20 cycles are shared among them):

- drift: the pool's autoscaling maximum changed by hand (the sandbox's admin drift route, as a console
  click), then changed back;
- a change waiting for approval: `substrate.gpu_pool.name` renamed in config.yaml (a new pool costs money,
  so a sensor never applies it), then renamed back;
- an idle GPU node: a GPU workload scales the pool up and goes, a bare pod holds the node past the grace
  period (the sandbox's clock advanced 25 minutes), then the pod goes and the autoscaler removes the node.

Every cycle must be reported and cleared by the daemon's ticks; afterwards no tick of any sensor has
failed, each finding produced exactly one report run and each clearing exactly one more, and every
such run succeeded.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from dagster import AssetKey, DagsterRunStatus, RunsFilter
from dagster._core.scheduler.instigation import TickStatus

from substrate.approval import SENSOR_TAG
from tests.assets.conftest import Admin
from tests.conftest import kube_api, shipped_environment

from .test_daemon_e2e import BIN, _daemon, _wait, deployment  # noqa: F401,F811 - deployment is a fixture

CYCLES = int(os.environ.get("GPUPLAT_DAEMON_CYCLES", "20"))  # in all: drift, approval, idle GPU share them
KINDS = ("drift", "approval", "idle-gpu")
CYCLE_LIMIT_S = 300  # one cycle, reported and cleared (about 15 s on an idle machine)
# One environment (its own cluster) per kind, so the three kinds cycle side by side.
ENVS = {"drift": "cyc-drift", "approval": "cyc-approval", "idle-gpu": "cyc-gpu"}


@pytest.fixture(params=["sqlite", "postgres"])
def storage(request, deployment, tmp_path):  # noqa: F811 - the fixture imported above
    """The deployment's instance on SQLite (the repository's dagster.yaml) or on a PostgreSQL server."""
    if request.param == "sqlite":
        yield deployment
        return
    from tests.deploy.test_postgres import Postgres, _pg_bindir

    bindir = _pg_bindir()
    if bindir is None:
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl): apt-get install postgresql (.ci/run does)")
    pg = Postgres(bindir)
    try:
        pg.start()
        pg.create_db("dagster")
        config = yaml.safe_load((deployment["home"] / "dagster.yaml").read_text())
        config["storage"] = {"postgres": {"postgres_db": {
            key: {"env": var} for key, var in (("hostname", "DAGSTER_PG_HOST"), ("port", "DAGSTER_PG_PORT"),
                                                ("username", "DAGSTER_PG_USER"), ("password", "DAGSTER_PG_PASSWORD"),
                                                ("db_name", "DAGSTER_PG_DB"))} | {"scheme": "postgresql+psycopg2"}}}
        (deployment["home"] / "dagster.yaml").write_text(yaml.safe_dump(config))
        deployment["env"].update(pg.env("dagster"))
        os.environ.update(pg.env("dagster"))  # this process opens the same instance
        yield deployment
    finally:
        for var in pg.env("dagster"):
            os.environ.pop(var, None)
        pg.stop()


class World:
    """One kind of finding in its own environment, made and undone the way a person would."""

    def __init__(self, d: dict, tmp_path: Path, kind: str, cycles: int):
        self.d, self.kind, self.cycles, self.tmp_path = d, kind, cycles, tmp_path
        self.env = ENVS[kind]
        self.admin = Admin(d["urls"])
        self.config_path = Path(d["env"]["GPUPLAT_ENVIRONMENTS"]) / self.env / "config.yaml"
        self.config = yaml.safe_load(self.config_path.read_text())
        self.gke = f"projects/gpuplat-sandbox/locations/us-central1-a/clusters/{self.env}"
        self.kube = f"gke_gpuplat-sandbox_us-central1-a_{self.env}"
        self.done = 0
        self.phase = "make"  # make -> reported -> cleared (one cycle)
        self.watermark = 0
        self.started = 0.0
        self.timings: list[float] = []

    def write(self, pool_name: str) -> None:
        cfg = dict(self.config)
        cfg["substrate"] = {**cfg["substrate"], "gpu_pool": {**cfg["substrate"].get("gpu_pool", {}), "name": pool_name}}
        self.config_path.write_text(yaml.safe_dump(cfg))

    def make(self) -> None:
        if self.kind == "drift":  # the maximum, not the minimum: a minimum of 1 would start a GPU node
            self._max_nodes(2)
        elif self.kind == "approval":
            self.write("gpu-l4-next")
        else:
            name = f"llm-{self.done}"
            node = self._gpu_node(name)
            self.admin.call("DELETE", "/sandbox/workloads/gpu", {"cluster": self.gke, "name": name})
            self.admin.call("POST", "/sandbox/blockers", {"cluster": self.gke, "node": node, "kind": "bare-pod"})
            self.admin.call("POST", "/sandbox/clock/advance", {"seconds": 25 * 60})

    def undo(self) -> None:
        if self.kind == "drift":
            self._max_nodes(1)
        elif self.kind == "approval":
            self.write("gpu-l4")
        else:
            self.admin.call("DELETE", "/sandbox/blockers", {"cluster": self.gke})
            self.admin.call("POST", "/sandbox/clock/advance", {"seconds": 11 * 60})  # past the autoscaler's window
            self.admin.call("POST", "/sandbox/reconcile")

    def step(self, instance) -> None:
        """Move this kind's cycle on by what the daemon has stored since the last step."""
        if self.phase == "make":
            self.started = time.monotonic()
            self.make()
            self.phase = "reported"
            return
        want = reported if self.phase == "reported" else cleared
        hit = next((r for r in _seen(instance, self.env, self.watermark) if want(self.kind, r)), None)
        if hit is None:
            # Bounded, not timed: on a loaded machine (CI's four workers on two cores) a tick can take long.
            assert time.monotonic() - self.started < CYCLE_LIMIT_S, (
                f"{self.env}: cycle {self.done + 1} ({self.kind}) not {self.phase} in {CYCLE_LIMIT_S} s: "
                f"{[r.asset_observation.description for r in _seen(instance, self.env, self.watermark)]}")
            return
        self.watermark = hit.storage_id
        if self.phase == "reported":
            self.undo()
            self.phase = "cleared"
        else:
            self.done += 1
            self.timings.append(time.monotonic() - self.started)
            self.phase = "make" if self.done < self.cycles else "done"

    def _max_nodes(self, n: int) -> None:
        self.admin.call("POST", "/sandbox/gke/drift/node-pool", {"cluster": self.gke, "nodePool": "gpu-l4",
                                                                 "patch": {"autoscaling": {"maxNodeCount": n}}})

    def _gpu_node(self, name: str) -> str:
        import kubernetes

        placed = self.admin.call("POST", "/sandbox/workloads/gpu", {"cluster": self.gke, "name": name})
        core = kubernetes.client.CoreV1Api(kube_api(self.d["urls"], self.tmp_path, self.kube))
        for _ in range(10):  # scale-up adds the node, the scheduler binds the pod on a later pass
            pod = core.read_namespaced_pod(placed["pod"], placed["namespace"])
            if pod.spec.node_name and pod.status.phase == "Running":
                return pod.spec.node_name
            self.admin.call("POST", "/sandbox/reconcile")
        raise AssertionError(f"the GPU workload {name} was not placed: {placed}")


def _seen(instance, env: str, after: int) -> list:
    """gpu_pool's observations for `env` stored after `after` (storage id), oldest first."""
    records = instance.fetch_observations(AssetKey("gpu_pool"), limit=100).records
    return sorted((r for r in records if r.storage_id > after and r.partition_key == env),
                  key=lambda r: r.storage_id)


def reported(kind: str, record) -> bool:
    obs = record.asset_observation
    text = obs.description or ""
    if kind == "drift":
        return text.startswith("drift:")
    if kind == "approval":
        action = obs.metadata.get("action")
        return action is not None and "needs approval" in action.value
    return text.startswith("scales_to_zero:")


def cleared(kind: str, record) -> bool:
    text = record.asset_observation.description or ""
    return "no longer idle past the grace period" in text if kind == "idle-gpu" else text.startswith("in sync again")


def test_the_daemon_reports_and_clears_every_cycle_without_a_failed_tick_or_a_duplicate_run(storage, tmp_path):
    d = storage
    env = {**d["env"], "GPUPLAT_GUARD_INTERVAL_S": "5", "GPUPLAT_AUTO_APPROVE": "1"}
    envs = Path(env["GPUPLAT_ENVIRONMENTS"])
    for name in ENVS.values():
        cfg = shipped_environment("sandbox", envs, name)
        cfg["cluster"]["name"] = name
        cfg["substrate"].update(remediation="report", require_approval=True)
        (envs / name / "config.yaml").write_text(yaml.safe_dump(cfg))
        done = subprocess.run([str(BIN / "dagster"), "asset", "materialize", "-m", "gpuplat_assets.definitions",
                               "--select", "*", "--partition", name],
                              cwd=d["cwd"], env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    worlds = [World(d, tmp_path, kind, CYCLES // len(KINDS) + (i < CYCLES % len(KINDS))) for i, kind in enumerate(KINDS)]
    d = {**d, "env": {k: v for k, v in env.items() if k != "GPUPLAT_AUTO_APPROVE"}}  # the daemon approves nothing

    with _daemon(d) as (daemon, instance, daemon_log):
        def first_tick():
            states = [s for s in instance.all_instigator_state() if s.name in ("drift_sensor", "scale_to_zero_guard")]
            return len(states) == 2 and all(
                (t := instance.get_ticks(s.instigator_origin_id, s.selector_id, limit=1)) and
                t[0].status in (TickStatus.SKIPPED, TickStatus.SUCCESS) for s in states)

        _wait(first_tick, 180, "the first finished ticks of both sensors", on_timeout=daemon_log)
        for w in worlds:
            w.watermark = max((r.storage_id for r in _seen(instance, w.env, 0)), default=0)
        while any(w.phase != "done" for w in worlds):
            for w in worlds:
                if w.phase != "done":
                    w.step(instance)
            assert daemon.poll() is None, daemon_log()
            time.sleep(0.5)
        timings = {w.kind: w.timings for w in worlds}

        def in_flight() -> list:
            return instance.get_runs(RunsFilter(statuses=[DagsterRunStatus.QUEUED, DagsterRunStatus.STARTING,
                                                          DagsterRunStatus.STARTED]))

        # The report runs queue behind one another (one run per environment at a time, four in all), and on
        # a loaded machine the queue can hold minutes of them: wait while it moves, fail when it stops.
        def finished() -> int:
            return instance.get_runs_count(RunsFilter(statuses=[DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE,
                                                                DagsterRunStatus.CANCELED]))

        progress = {"finished": finished(), "at": time.monotonic()}

        def drained_or_stuck():
            if finished() > progress["finished"]:
                progress.update(finished=finished(), at=time.monotonic())
            left = in_flight()
            if not left:
                return "drained"
            if time.monotonic() - progress["at"] > 180:
                return "no run finished for 180 s; in flight: " + "; ".join(
                    f"{r.run_id[:8]} {r.status.value} {r.tags.get('dagster/run_key', '')}" for r in left)
            return None

        outcome = _wait(drained_or_stuck, 1200, "the report runs to finish", interval=2, on_timeout=daemon_log)
        assert outcome == "drained", outcome + "\n" + daemon_log()
        failed_ticks, ticks = [], 0
        for state in instance.all_instigator_state():
            for tick in instance.get_ticks(state.instigator_origin_id, state.selector_id, limit=10_000):
                ticks += 1
                if tick.status == TickStatus.FAILURE:
                    failed_ticks.append((state.name, tick.error.message if tick.error else ""))
        sensor_runs = instance.get_runs(RunsFilter(tags={SENSOR_TAG: "drift-sensor"})) + \
            instance.get_runs(RunsFilter(tags={SENSOR_TAG: "scale-to-zero-guard"}))
    assert failed_ticks == [], failed_ticks[:3]
    # One report run per finding and one per clearing: nothing repeated, nothing missed, and none repairs.
    # gpu_pool's findings are the cycles; a renamed pool also moves gpu_stack (it verifies that pool),
    # which is reported and cleared alongside.
    keys = [r.tags.get("dagster/run_key", "") for r in sensor_runs]
    listing = "\n".join(sorted(keys))
    assert len(set(keys)) == len(keys), listing
    for w in worlds:  # this kind's cycles, each a report and a clearing of gpu_pool
        assert len([k for k in keys if k.startswith(f"{w.env}:gpu_pool:")]) == 2 * w.cycles, listing
    assert sum(w.done for w in worlds) == CYCLES
    assert len([k for k in keys if ":cleared:" in k]) * 2 == len(keys), listing
    assert all(r.asset_selection is None for r in sensor_runs)  # checks only: report mode never repairs
    assert {r.status for r in sensor_runs} == {DagsterRunStatus.SUCCESS}
    label = "PostgreSQL" if "DAGSTER_PG_DB" in d["env"] else "SQLite"
    print(f"\n{CYCLES} report -> clear cycles ({label}, {ticks} ticks, 0 failed, {len(sensor_runs)} report runs); "
          + ", ".join(f"{k}: median {sorted(v)[len(v) // 2]:.1f}s per cycle" for k, v in timings.items() if v))

