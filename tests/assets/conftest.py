"""Fixtures for materializing the asset graph against a sandbox with a real DagsterInstance."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from dagster import DagsterInstance, materialize

from tests.conftest import Platform, admin

SANDBOX_GKE = {
    "cluster": {"name": "ai-dev", "projectID": "gpuplat-test", "location": "us-central1-a"},
    "repoURL": "https://github.com/example/gpu-inference-platform", "repoBranch": "main", "profile": "dev",
    "secret_backend": "gcpsm", "gpu_stack": "gke-managed",
    "substrate": {"kind": "gke", "sandbox": True, "external_secrets": []},
}


class Admin:
    def __init__(self, urls: dict):
        self.urls = urls

    def call(self, method: str, path: str, body=None):
        return admin(self.urls, method, path, body)

    def calls(self) -> dict:
        return self.call("GET", "/sandbox/calls")

    def reset(self) -> None:
        self.call("POST", "/sandbox/calls/reset")

    def fault(self, api: str, method: str, kind: str, count: int = 1) -> None:
        self.call("POST", "/sandbox/faults", {"api": api, "method": method, "kind": kind, "count": count})


class Gpuplat:
    """One test's view: its sandbox, its environment configs, its kube dir, a real instance."""

    def __init__(self, sandbox, tmp_path: Path, platform: Platform, persistent: bool = False):
        from resources import GpuplatResource

        self.sandbox = sandbox
        self.admin = Admin(sandbox.urls())
        # In memory (Dagster's own SQLite schema, without a file per run): on disk, each event costs a new
        # engine and a commit, a third of an asset test's time. A test that needs an instance it can
        # reopen (a schedule context, a second process) asks for one with `persistent=True`.
        (tmp_path / "dagster_instance").mkdir(exist_ok=True)
        self.instance = (DagsterInstance.local_temp(tempdir=str(tmp_path / "dagster_instance")) if persistent
                         else DagsterInstance.ephemeral(tempdir=str(tmp_path / "dagster_instance")))
        self.resource = GpuplatResource(kube_dir=str(tmp_path / "kube"), sandbox_state_dir=str(sandbox.state_dir))
        self.tmp_path = tmp_path
        self.platform = platform

    def write(self, name: str, config: dict | str) -> Path:
        """Write an environment's config (raw text for a broken one) and make it a partition."""
        path = self.platform.write(name, config)
        self.add_partition(name)
        return path

    def env(self, name: str = "sandbox"):
        from substrate.environments import load_environment
        return load_environment(name)

    def add_partition(self, name: str) -> None:
        from substrate.partitions import NAME
        if not self.instance.has_dynamic_partition(NAME, name):
            self.instance.add_dynamic_partitions(NAME, [name])

    def configure(self, name: str = "sandbox", **overrides) -> dict:
        cfg = json.loads(json.dumps(SANDBOX_GKE))
        for key, value in overrides.items():
            if isinstance(value, dict) and isinstance(cfg.get(key), dict):
                cfg[key] = {**cfg[key], **value}
            else:
                cfg[key] = value
        self.write(name, cfg)
        return cfg

    def materialize(self, select: list[str] | None = None, env: str = "sandbox", tags: dict | None = None,
                    raise_on_error: bool = True):
        from gpuplat_assets.assets import ASSETS, CHECKS
        self.add_partition(env)

        selection = None
        if select is not None:
            selection = select
        return materialize([*ASSETS, *CHECKS], selection=selection, partition_key=env, instance=self.instance,
                           resources={"gpuplat": self.resource}, tags=tags or {}, raise_on_error=raise_on_error)

    def drift_checks(self, env: str = "sandbox", raise_on_error: bool = True):
        """The code location's checks-only job for one environment, as the schedule requests it."""
        import logging
        from datetime import datetime, timezone

        from gpuplat_assets.definitions import defs
        from sensors.schedules import check_requests

        requests = check_requests(self.instance, datetime.now(timezone.utc), logging.getLogger("drift_checks"))
        request = next(r for r in requests if r.partition_key == env)
        return defs.resolve_job_def("drift_checks").execute_in_process(
            partition_key=request.partition_key, tags=request.tags, instance=self.instance,
            resources={"gpuplat": self.resource}, raise_on_error=raise_on_error)

    def checks(self, result) -> dict[tuple[str, str], bool]:
        """(asset, check) -> passed; never empty, so `all(gp.checks(r).values())` cannot pass on no checks."""
        out = {(e.asset_key.path[-1], e.check_name): e.passed for e in result.get_asset_check_evaluations()}
        assert out, "the run evaluated no asset check"
        return out


def dagster_home(tmp_path: Path) -> Path:
    """An instance used before, as a user's is: two processes that open a brand-new SQLite DAGSTER_HOME at
    the same moment both stamp its schema version and leave it unusable ("more than one head"), Dagster's
    own race, not the one under test."""
    home = tmp_path / "home"
    home.mkdir()
    DagsterInstance.from_config(str(home)).dispose()
    return home


@pytest.fixture
def gp(sandbox, tmp_path, monkeypatch, platform, request):
    monkeypatch.delenv("GPUPLAT_AUTO_APPROVE", raising=False)
    g = Gpuplat(sandbox, tmp_path, platform, persistent=request.node.get_closest_marker("persistent_instance") is not None)
    g.configure()
    return g


@pytest.fixture
def fast_clock(gp):
    """Simulated time 60 times faster than the wall clock while the test runs (30 s every 0.5 s): the
    simulated GPU Operator rolls out in 60 simulated seconds, a Gateway's load balancer goes 120
    simulated seconds after it."""
    stop = threading.Event()

    def run():
        while not stop.wait(0.5):
            gp.admin.call("POST", "/sandbox/clock/advance", {"seconds": 30})
    t = threading.Thread(target=run, daemon=True)
    t.start()
    yield
    stop.set()
    t.join()
