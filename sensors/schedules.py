"""Scheduled drift checks: every asset check of every built environment, on a cron (default every 30 minutes).

The drift sensor reacts within a minute but only to plans; the checks say more (quota, reachability,
Applications healthy, a GPU pool stuck above zero). This schedule runs the checks-only `drift_checks`
job once per environment that was materialized, so each check's status per partition is at most one
interval old even where nothing was materialized for weeks. An environment never brought up has
nothing to check (every check would only fail on its absence): it is skipped and named in the tick's
log. Nothing is changed by these runs.
"""

from __future__ import annotations

import os
from datetime import datetime

from dagster import DefaultScheduleStatus, RunRequest, ScheduleEvaluationContext, SkipReason, schedule

from substrate import history
from substrate.approval import SENSOR_TAG
from substrate.jobs import DRIFT_CHECKS_JOB
from substrate.pieces import PIECES

from .tick import fleet

CRON_VAR = "GPUPLAT_DRIFT_CHECKS_CRON"
DEFAULT_CRON = "*/30 * * * *"
TRIGGER = "drift-checks-schedule"


def materialized_environments(instance) -> set[str]:
    """Environments with at least one materialized asset."""
    out: set[str] = set()
    for piece in PIECES:
        out |= set(history.latest(instance, piece.name))
    return out


def plan_checks(instance) -> tuple[list[str], dict[str, str]]:
    """(environments to check, skipped environment -> why)."""
    now = fleet(instance)
    built = materialized_environments(instance)
    names, skipped = [], {}
    for name in now.names:
        if name not in built:
            skipped[name] = "never materialized"
        else:
            names.append(name)
    for name in now.unknown():
        skipped[name] = "not a partition yet"
    for name, why in now.found.invalid.items():
        skipped[name] = why
    return names, skipped


def check_requests(instance, scheduled: datetime | None, log) -> list[RunRequest] | SkipReason:
    """One checks-only run request per materialized environment, keyed by the scheduled minute."""
    names, skipped = plan_checks(instance)
    if skipped:
        log.info("skipped: " + "; ".join(f"{n} ({why})" for n, why in sorted(skipped.items())))
    if not names:
        return SkipReason("no materialized environment to check" +
                          (f"; skipped: {', '.join(sorted(skipped))}" if skipped else ""))
    stamp = scheduled.strftime("%Y-%m-%dT%H:%M") if scheduled else "now"
    return [RunRequest(run_key=f"drift_checks:{n}:{stamp}", partition_key=n, tags={SENSOR_TAG: TRIGGER})
            for n in names]


def build_drift_checks_schedule(name: str = "drift_checks_schedule", cron: str | None = None,
                                default_status: DefaultScheduleStatus = DefaultScheduleStatus.RUNNING):
    @schedule(name=name, cron_schedule=cron or os.environ.get(CRON_VAR) or DEFAULT_CRON, job_name=DRIFT_CHECKS_JOB,
              default_status=default_status,
              description="Every asset check of every materialized environment (the drift_checks job, one run per "
                          "partition); environments never built are skipped and named in the tick's log.")
    def _schedule(context: ScheduleEvaluationContext):
        return check_requests(context.instance, context.scheduled_execution_time, context.log)

    return _schedule


drift_checks_schedule = build_drift_checks_schedule()
