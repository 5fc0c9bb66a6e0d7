"""The code location: assets, checks, jobs, sensors, schedules and resources in one place."""

from __future__ import annotations

from dagster import AssetSelection, Definitions, PartitionedConfig, define_asset_job, in_process_executor

from resources import GpuplatResource
from sensors.drift import drift_sensor
from sensors.scale_to_zero import scale_to_zero_guard
from sensors.schedules import drift_checks_schedule

from .assets import ASSETS, CHECKS, PARTITIONS

# One process per run: the steps are API calls, and a subprocess per step would cost more than them.
substrate_job = define_asset_job(
    "substrate", selection=AssetSelection.all(),
    description="Bring the whole substrate of an environment up to its config (desired -> observe -> plan -> apply).",
    executor_def=in_process_executor)
# Checks only: Dagster infers no partitions from checks, so the partitions come with a
# PartitionedConfig. The launchpad then has an environment picker, and the CLI takes the partition
# like any partitioned job (`dagster job backfill -j drift_checks --partitions <environment>`).
drift_checks_job = define_asset_job(
    "drift_checks", selection=AssetSelection.all_asset_checks(),
    description="Run every asset check of one environment without changing anything: the whole substrate's plan. "
                "Pick the environment (the partition, `<environment>`) when launching.",
    executor_def=in_process_executor,
    config=PartitionedConfig(partitions_def=PARTITIONS, run_config_for_partition_key_fn=lambda _key: {}))

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
