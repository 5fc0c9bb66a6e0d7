"""The code location's two jobs, named so that sensors and schedules can target them.

`substrate`: materialize (a selection of) the asset graph for one environment; every sensor-started run
is a run of it, a subset to one asset or to a few checks only. `drift_checks`: every asset check of one
environment without changing anything (the seed's `make doctor`).
"""

from __future__ import annotations

from dagster import AssetSelection, PartitionedConfig, define_asset_job, in_process_executor

from .partitions import ENVIRONMENTS

SUBSTRATE_JOB = "substrate"
DRIFT_CHECKS_JOB = "drift_checks"

# One process per run: the steps are API calls, and a subprocess per step would cost more than them.
substrate_job = define_asset_job(
    SUBSTRATE_JOB, selection=AssetSelection.all(),
    description="Bring the whole substrate of an environment up to its config (desired -> observe -> plan -> apply).",
    executor_def=in_process_executor)
# Checks only: Dagster infers no partitions from checks, so the partitions come with a
# PartitionedConfig. The launchpad then has an environment picker, and the CLI takes the partition
# like any partitioned job (`dagster job execute -j drift_checks --tags '{"dagster/partition":"<env>"}'`).
drift_checks_job = define_asset_job(
    DRIFT_CHECKS_JOB, selection=AssetSelection.all_asset_checks(),
    description="Run every asset check of one environment without changing anything: the whole substrate's plan. "
                "Pick the environment (the partition, `<environment>`) when launching.",
    executor_def=in_process_executor,
    config=PartitionedConfig(partitions_def=ENVIRONMENTS, run_config_for_partition_key_fn=lambda _key: {}))
