"""Who is ahead of a run on its environment: a run created a moment earlier that has not started yet counts
(two command-line runs started together, one of them slow to start on a loaded machine), a stale one does not."""

from __future__ import annotations

import time

from dagster import DagsterInstance, DagsterRunStatus
from dagster._core.storage.dagster_run import DagsterRun

from substrate import lease


def _run(instance, run_id: str, status: DagsterRunStatus) -> None:
    instance.add_run(DagsterRun(job_name="__ASSET_JOB", run_id=run_id, status=status,
                                tags={lease.PARTITION_TAG: "sandbox"}))


def test_a_run_created_first_but_not_started_yet_is_ahead_until_it_is_stale(monkeypatch):
    instance = DagsterInstance.ephemeral()
    _run(instance, "a" * 36, DagsterRunStatus.NOT_STARTED)
    time.sleep(0.01)  # created after it
    _run(instance, "b" * 36, DagsterRunStatus.STARTED)
    assert [r.run_id for r in lease.ahead(instance, "b" * 36, "sandbox")] == ["a" * 36]
    assert lease.ahead(instance, "a" * 36, "sandbox") == []  # the one created first never waits for a later one
    monkeypatch.setattr(lease, "NOT_STARTED_GRACE_S", 0.0)  # as if its process had died long ago
    time.sleep(0.01)
    assert lease.ahead(instance, "b" * 36, "sandbox") == []
