"""Fixtures for sensor ticks against the sandbox with a real DagsterInstance.

Each test has its own environments folder (`tests.conftest.platform`): a sensor under test sees only
the environments its test wrote, and their partitions in the test's own instance.
"""

from __future__ import annotations

from dagster import AssetKey, AssetObservation, RunRequest, SensorResult, build_sensor_context

from tests.assets.conftest import Gpuplat, fast_clock, gp  # noqa: F401 - fixtures, used by name

GKE_CLUSTER = "projects/gpuplat-test/locations/us-central1-a/clusters/ai-dev"
KUBE_CLUSTER = "gke_gpuplat-test_us-central1-a_ai-dev"


class Ticker:
    """Ticks one sensor definition the way the daemon would, carrying the cursor between ticks.

    With `daemon=True` it also does what the daemon does with a tick's result: the events are stored in
    the instance, requested partitions added, and each run request whose run key is new is executed (in
    process, as a subset of its job); a run key seen before is skipped, as Dagster skips it."""

    def __init__(self, sensor_def, gpuplat: Gpuplat, daemon: bool = False):
        self.sensor_def = sensor_def
        self.gp = gpuplat
        self.cursor: str | None = None
        self.daemon = daemon
        self.run_keys: list[str] = []
        self.launched: list = []  # (RunRequest, ExecuteInProcessResult)

    def tick(self) -> SensorResult:
        ctx = build_sensor_context(instance=self.gp.instance, cursor=self.cursor,
                                   resources={"gpuplat": self.gp.resource}, sensor_name=self.sensor_def.name)
        result = self.sensor_def(ctx)
        assert isinstance(result, SensorResult), result
        if result.cursor is not None:
            self.cursor = result.cursor
        if self.daemon:
            self.store(result)
        return result

    def store(self, result: SensorResult) -> None:
        for event in result.asset_events or []:
            self.gp.instance.report_runless_asset_event(event)
        for request in result.dynamic_partitions_requests or []:
            self.gp.instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
        for rr in result.run_requests or []:
            if rr.run_key in self.run_keys:
                continue
            self.run_keys.append(rr.run_key)
            self.launched.append((rr, self.execute(rr)))

    def execute(self, rr: RunRequest):
        from gpuplat_assets.definitions import defs

        job = defs.resolve_job_def(rr.job_name or "substrate")
        subset = job.get_subset(asset_selection=set(rr.asset_selection or []),
                                asset_check_selection=set(rr.asset_check_keys or []))
        return subset.execute_in_process(partition_key=rr.partition_key, instance=self.gp.instance,
                                         tags={**rr.tags, "dagster/run_key": rr.run_key},
                                         resources={"gpuplat": self.gp.resource}, raise_on_error=False)


def runs(result: SensorResult) -> list[RunRequest]:
    return list(result.run_requests or [])


def observations(result: SensorResult) -> list[AssetObservation]:
    return [e for e in result.asset_events or [] if isinstance(e, AssetObservation)]


def skip_text(result: SensorResult) -> str:
    reason = result.skip_reason
    return (reason.skip_message if hasattr(reason, "skip_message") else str(reason)) if reason else ""



def latest_check(gp: Gpuplat, asset: str, check: str, env: str = "sandbox"):
    """The latest result of `check` on `asset` for `env` as the instance stored it (what the UI shows):
    its AssetCheckEvaluation, or None when nothing was recorded."""
    from dagster import AssetCheckKey
    from dagster._core.event_api import PartitionKeyFilter

    key = AssetCheckKey(AssetKey(asset), check)
    record = gp.instance.event_log_storage.get_latest_asset_check_execution_by_key(
        [key], partition_filter=PartitionKeyFilter(key=env)).get(key)
    return record.evaluation if record is not None else None
