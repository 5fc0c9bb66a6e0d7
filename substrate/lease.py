"""One run per environment, on every path.

The run queue's per-partition limit holds only for runs that go through the queue. A command-line run
(`dagster asset materialize`, `dagster job execute`, `dg launch`) runs in its own process and never
queues, so two of them, or one and a queued run, could change one environment at once. Every run
therefore takes its environment's lease at its first step, before it reads the config or calls the
cloud: among the runs of this environment that are STARTED (or STARTING, or created in the last 30 s and
about to start) and alive, the oldest goes
first (created first; the run id breaks a tie), the others wait for it, saying for which, and give up
after GPUPLAT_LEASE_WAIT_S (default 900 s) in one line naming it. A holder whose process is gone
(substrate/workers.py) holds nothing.

Reads that never change anything (a checks-only run) take the lease too: they would otherwise read a
half-applied state and report it.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Callable

from dagster import DagsterRunStatus, RunsFilter

from .piece import PieceError
from .workers import WORKER_TAG, alive

WAIT_VAR = "GPUPLAT_LEASE_WAIT_S"
DEFAULT_WAIT_S = 900.0
ERR_LEASE = "another run is changing this environment"
PARTITION_TAG = "dagster/partition"
IN_PROGRESS = [DagsterRunStatus.STARTING, DagsterRunStatus.STARTED]
# A command-line run is created (NOT_STARTED) a moment before it starts. On a loaded machine a run created
# first can still be NOT_STARTED when a run created after it asks who is ahead (both then went on at once):
# it counts while it is at most this old (one whose process died before starting is passed by after that).
NOT_STARTED_GRACE_S = 30.0

_held: set[str] = set()
_lock = threading.Lock()


class EnvironmentBusy(PieceError):
    """Another run of this environment is still going after the wait."""


def wait_limit() -> float:
    try:
        return max(0.0, float(os.environ.get(WAIT_VAR, DEFAULT_WAIT_S)))
    except ValueError:
        return DEFAULT_WAIT_S


def ahead(instance, run_id: str, env: str) -> list:
    """The runs of `env` still in progress that started before this one and whose process lives."""
    records = instance.get_run_records(RunsFilter(tags={PARTITION_TAG: env},
                                                  statuses=[*IN_PROGRESS, DagsterRunStatus.NOT_STARTED]))
    mine = next((r for r in records if r.dagster_run.run_id == run_id), None)
    if mine is None:
        mine_record = instance.get_run_record_by_id(run_id)
        order = (mine_record.create_timestamp, run_id) if mine_record else (float("inf"), run_id)
    else:
        order = (mine.create_timestamp, run_id)
    out = []
    for r in records:
        other = r.dagster_run
        if other.run_id == run_id or (r.create_timestamp, other.run_id) > order:
            continue
        age = time.time() - r.create_timestamp.timestamp()
        if other.status == DagsterRunStatus.NOT_STARTED and age > NOT_STARTED_GRACE_S:
            continue
        worker = other.tags.get(WORKER_TAG)
        if worker and alive(worker) is False:
            continue  # its process is gone: it holds nothing (the dead-runs sensor marks it failed)
        out.append(other)
    return out


def acquire(instance, run_id: str, env: str, log, sleeper: Callable[[float], None] = time.sleep,
            timer: Callable[[], float] = time.monotonic, interval: float = 2.0) -> None:
    """Wait until no older live run of `env` is in progress (once per run and process)."""
    with _lock:
        if run_id in _held:
            return
    started = timer()
    last_said = ""
    limit = wait_limit()
    while True:
        first = ahead(instance, run_id, env)
        if not first:
            with _lock:
                _held.add(run_id)
            if last_said:
                log.info(f"{env}: run {last_said} finished; this run goes on after {timer() - started:.0f}s")
            return
        holder = first[0]
        waited = timer() - started
        if waited >= limit:
            raise EnvironmentBusy(
                f"{ERR_LEASE}: run {holder.run_id} ({holder.job_name}) is still in progress on {env} after "
                f"{waited:.0f}s; nothing was changed by this run",
                f"wait for it to finish (or fail) and start this again; {WAIT_VAR} sets how long a run waits")
        if holder.run_id != last_said:
            log.info(f"{env}: waiting for run {holder.run_id} ({holder.job_name}), which started first: one run "
                     f"changes an environment at a time")
            last_said = holder.run_id
        sleeper(interval)
