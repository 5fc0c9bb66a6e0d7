"""A run whose process is gone is marked failed, so it never holds the run queue.

Dagster's run monitoring fails a run whose launcher-made worker died, but a run started from the
command line executes in the command's own process, which no launcher watches: killed, it stays
STARTED until `max_runtime_seconds` (two hours), counting against `max_concurrent_runs` and the
one-run-per-environment limit of every queued run meanwhile. Each run records its worker (host, pid,
process start time) at its first step (substrate/workers.py); this sensor marks a STARTED run whose
worker on this host is gone as failed. A run killed before its first step is judged by the pid of its
RUN_START event, on an instance whose storage is this host's own (SQLite): there, every run ran here.
Runs on other hosts are left to their own host's sensor and to Dagster's run monitoring.
"""

from __future__ import annotations

import time

from dagster import (
    DagsterEventType,
    DagsterRunStatus,
    DefaultSensorStatus,
    RunsFilter,
    SensorEvaluationContext,
    SkipReason,
    sensor,
)

from substrate.workers import WORKER_TAG, alive, pid_alive

INTERVAL_S = 30
# A run younger than this may not have reached its first step: judged only by its RUN_START pid.
GRACE_S = 20.0


def _local_storage(instance) -> bool:
    return type(instance.run_storage).__name__.startswith("Sqlite")


def _start_pid(instance, run_id: str) -> int | None:
    for record in instance.get_records_for_run(run_id, of_type=DagsterEventType.RUN_START, limit=1).records:
        event = record.event_log_entry.dagster_event
        if event is not None and event.pid:
            return int(event.pid)
    return None


def dead_runs(instance, now: float | None = None) -> list[tuple[object, str]]:
    """(run, why) for every STARTED run of this host whose process is gone."""
    now = now or time.time()
    out = []
    local = _local_storage(instance)
    for record in instance.get_run_records(RunsFilter(statuses=[DagsterRunStatus.STARTED])):
        run = record.dagster_run
        worker = run.tags.get(WORKER_TAG)
        if worker:
            if alive(worker) is False:
                out.append((run, f"its process ({worker.rsplit(':', 1)[0]}) is gone"))
            continue
        if not local or (record.start_time or now) > now - GRACE_S:
            continue
        pid = _start_pid(instance, run.run_id)
        if pid is not None and not pid_alive(pid):
            out.append((run, f"its process (pid {pid}) is gone"))
    return out


@sensor(name="dead_runs_sensor", minimum_interval_seconds=INTERVAL_S, default_status=DefaultSensorStatus.RUNNING,
        description="Marks a STARTED run whose process is gone (a command-line run killed, a crashed worker) as "
                    "failed, so it never holds the run queue or an environment.")
def dead_runs_sensor(context: SensorEvaluationContext):
    found = dead_runs(context.instance)
    for run, why in found:
        message = (f"gpuplat: run {run.run_id} marked failed: {why} (killed or crashed); what it changed is "
                   f"re-observed by the next materialization")
        context.log.warning(message)
        context.instance.report_run_failed(run, message)
    if not found:
        return SkipReason("no STARTED run with a dead process")
    return SkipReason(f"marked {len(found)} dead run(s) failed: " + ", ".join(r.run_id for r, _ in found))
