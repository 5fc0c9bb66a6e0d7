"""The code location: assets, checks, jobs, sensors, schedules and resources in one place."""

from __future__ import annotations

from dagster import AssetSelection, Definitions, define_asset_job, in_process_executor

from resources import GpuplatResource
from sensors.drift import drift_sensor
from sensors.scale_to_zero import scale_to_zero_guard
from sensors.schedules import drift_checks_schedule

from .assets import ASSETS, CHECKS

# One process per run: the steps are API calls, and a subprocess per step would cost more than them.
substrate_job = define_asset_job(
    "substrate", selection=AssetSelection.all(),
    description="Bring the whole substrate of an environment up to its config (desired -> observe -> plan -> apply).",
    executor_def=in_process_executor)
# Checks only: Dagster infers no partitions for it, so each run names its environment with the
# dagster/partition tag (the schedule does; in the UI, add the tag when launching).
drift_checks_job = define_asset_job(
    "drift_checks", selection=AssetSelection.all_asset_checks(),
    description="Run every asset check without changing anything: the whole substrate's plan. "
                "Name the environment with the run tag dagster/partition=<environment>.",
    executor_def=in_process_executor)

defs = Definitions(
    assets=ASSETS,
    asset_checks=CHECKS,
    jobs=[substrate_job, drift_checks_job],
    # drift: every GPUPLAT_DRIFT_INTERVAL_S (60 s); guard: every 60 s; checks: every 30 minutes.
    sensors=[drift_sensor, scale_to_zero_guard],
    schedules=[drift_checks_schedule],
    resources={"gpuplat": GpuplatResource()},
    executor=in_process_executor,
)
