"""Scheduled drift checks: every asset check of every environment, on a cron (default every 30 minutes).

The drift sensor reacts within a minute but only to plans; the checks say more (quota, reachability,
Applications healthy, a GPU pool stuck above zero). This schedule runs the checks-only
`drift_checks` job once per environment, so each check's status per partition is at most one
interval old even where nothing was materialized for weeks. Nothing is changed by these runs.
"""

from __future__ import annotations

import os

from dagster import DefaultScheduleStatus, RunRequest, ScheduleEvaluationContext, SkipReason, schedule

from gpuplat_assets.assets import PARTITIONS, SENSOR_TAG
from gpuplat_assets.config import load_environments

CRON_VAR = "GPUPLAT_DRIFT_CHECKS_CRON"
DEFAULT_CRON = "*/30 * * * *"
JOB_NAME = "drift_checks"


def build_drift_checks_schedule(name: str = "drift_checks_schedule", cron: str | None = None,
                                default_status: DefaultScheduleStatus = DefaultScheduleStatus.RUNNING):
    @schedule(name=name, cron_schedule=cron or os.environ.get(CRON_VAR) or DEFAULT_CRON, job_name=JOB_NAME,
              default_status=default_status,
              description="Every asset check of every environment (the drift_checks job, one run per partition).")
    def _schedule(context: ScheduleEvaluationContext):
        # Partitions are fixed when the code location loads; an environment folder removed since then
        # would only fail every check, so the environments on disk now are intersected with them.
        present = set(load_environments().names)
        names = [n for n in PARTITIONS.get_partition_keys() if n in present]
        if not names:
            return SkipReason("no environment folders: nothing to check")
        stamp = context.scheduled_execution_time.strftime("%Y-%m-%dT%H:%M") if context.scheduled_execution_time \
            else "now"
        return [RunRequest(run_key=f"drift_checks:{n}:{stamp}", partition_key=n,
                           tags={SENSOR_TAG: "drift-checks-schedule"}) for n in names]

    return _schedule


drift_checks_schedule = build_drift_checks_schedule()
