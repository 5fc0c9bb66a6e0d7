"""Fixtures for sensor ticks against the sandbox with a real DagsterInstance.

The session's environments folder holds fixed names (`tests.conftest.ENV_NAMES`, the asset graph's
partitions) with placeholder configs; a sensor under test gets its own environments root that links
only the environments its test configured, so placeholders are never observed.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import yaml
from dagster import AssetCheckEvaluation, AssetObservation, RunRequest, SensorResult, build_sensor_context

from tests.assets.conftest import Gpuplat, fast_clock, gp  # noqa: F401 - fixtures, used by name
from tests.conftest import ENV_NAMES, TEST_ENVIRONMENTS
from tests.platform_tree import example_platform

GKE_CLUSTER = "projects/gpuplat-test/locations/us-central1-a/clusters/ai-dev"
KUBE_CLUSTER = "gke_gpuplat-test_us-central1-a_ai-dev"


@pytest.fixture(autouse=True)
def own_discovery_cache(tmp_path, monkeypatch):
    """The kubernetes DynamicClient's discovery cache is a file keyed by the API server URL
    (resources/kube.py). Sandboxes of successive tests can get the same ephemeral port, and then
    the same URL: a later test would read an earlier one's discovery (Argo CD's CRDs present
    before they are installed) and get 404s. Each test keeps its cache in its own directory."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setenv("TMPDIR", str(tmp_path))


class Envs:
    """A sensor's environments root: links to the session's environment folders it should see, in
    a platform checkout of its own (the folder holding `environments/` is the fork)."""

    def __init__(self, root: Path):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def add(self, *names: str) -> "Envs":
        example_platform(self.root.parent, names)
        for name in names:
            link = self.root / name
            if not link.exists():
                link.symlink_to(TEST_ENVIRONMENTS / name, target_is_directory=True)
        return self

    @staticmethod
    def write(name: str, config: dict | str) -> None:
        text = config if isinstance(config, str) else yaml.safe_dump(config)
        (TEST_ENVIRONMENTS / name / "config.yaml").write_text(text)


@pytest.fixture
def envs(tmp_path) -> Envs:
    yield Envs(tmp_path / "sensor-platform" / "environments")
    for name in ENV_NAMES:  # back to placeholders
        (TEST_ENVIRONMENTS / name / "config.yaml").write_text("cluster: {name: placeholder, projectID: placeholder}\n")


class Ticker:
    """Ticks one sensor definition the way the daemon would, carrying the cursor between ticks."""

    def __init__(self, sensor_def, gpuplat: Gpuplat):
        self.sensor_def = sensor_def
        self.gp = gpuplat
        self.cursor: str | None = None

    def tick(self) -> SensorResult:
        ctx = build_sensor_context(instance=self.gp.instance, cursor=self.cursor,
                                   resources={"gpuplat": self.gp.resource}, sensor_name=self.sensor_def.name)
        result = self.sensor_def(ctx)
        assert isinstance(result, SensorResult), result
        if result.cursor is not None:
            self.cursor = result.cursor
        return result


def runs(result: SensorResult) -> list[RunRequest]:
    return list(result.run_requests or [])


def observations(result: SensorResult) -> list[AssetObservation]:
    return [e for e in result.asset_events or [] if isinstance(e, AssetObservation)]


def evaluations(result: SensorResult) -> list[AssetCheckEvaluation]:
    return [e for e in result.asset_events or [] if isinstance(e, AssetCheckEvaluation)]


def skip_text(result: SensorResult) -> str:
    reason = result.skip_reason
    return (reason.skip_message if hasattr(reason, "skip_message") else str(reason)) if reason else ""

