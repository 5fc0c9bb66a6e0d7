"""Waiting on GKE: an operation already in flight is waited for, never repeated or raced.

Used by every piece that changes GKE (cluster, gpu_pool) and by the pause.
"""

from __future__ import annotations

from .piece import PieceError, Run
from .plan import Action

# GKE's own bound on a cluster operation (create, delete, upgrade): gpuplat waits that long, no longer.
CLUSTER_TIMEOUT_S = 1800


def replan_after_wait(run: Run, actions: list[Action]) -> list[Action]:
    """The plan once GKE is idle again; what it adds still needs approval like any other plan."""
    pending = [a.summary() for a in actions if a.needs_approval]
    if pending and not run.approved:
        raise PieceError(f"approval needed once the operation in progress finished: {'; '.join(pending)}")
    return [a for a in actions if a.kind not in ("wait", "cannot-fix")]


def wait_running_operations(run: Run, location: str) -> None:
    """An operation already running (say, from an interrupted materialization) is waited for, not repeated."""
    g = run.conn.google
    for op in g.running_operations(location):
        run.log.info(f"waiting for GKE operation {op.name} ({op.operation_type}) already in progress")
        g.wait_operation(op, CLUSTER_TIMEOUT_S, run.progress(f"operation {op.operation_type}"))
