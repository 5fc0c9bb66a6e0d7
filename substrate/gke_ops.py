"""Waiting on GKE: an operation already in flight is waited for, never repeated or raced.

Used by every piece that changes GKE (cluster, gpu_pool) and by the pause.
"""

from __future__ import annotations

from typing import Callable, TypeVar

from .piece import PieceError, Run
from .plan import Action

# GKE's own bound on a cluster operation (create, delete, upgrade): gpuplat waits that long, no longer.
CLUSTER_TIMEOUT_S = 1800

S = TypeVar("S")
O = TypeVar("O")


def after_operations_in_flight(run: Run, location: str, spec: S, observed: O, actions: list[Action],
                               observe: Callable[[Run, S], O],
                               plan: Callable[[S, O], list[Action]]) -> tuple[O, list[Action]]:
    """Where the plan says to wait (GKE is busy with an operation already in flight): wait for it, then
    observe and plan again. What the new plan adds still needs approval like any other plan."""
    if not any(a.kind == "wait" for a in actions):
        return observed, actions
    wait_running_operations(run, location)
    observed = observe(run, spec)
    actions = plan(spec, observed)
    pending = [a.summary() for a in actions if a.needs_approval]
    if pending and not run.approved:
        raise PieceError(f"approval needed once the operation in progress finished: {'; '.join(pending)}")
    return observed, [a for a in actions if a.kind not in ("wait", "cannot-fix")]


def wait_running_operations(run: Run, location: str) -> None:
    """An operation already running (say, from an interrupted materialization) is waited for, not repeated."""
    g = run.conn.google
    for op in g.running_operations(location):
        run.log.info(f"waiting for GKE operation {op.name} ({op.operation_type}) already in progress")
        g.wait_operation(op, CLUSTER_TIMEOUT_S, run.progress(f"operation {op.operation_type}"))
