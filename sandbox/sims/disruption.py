"""Simulation of kube-controller-manager's disruption controller: a PodDisruptionBudget's status.

For each budget (policy/v1), `currentHealthy` is the number of Running pods its selector matches in
its namespace, `desiredHealthy` follows `minAvailable` (a count or a percentage, rounded up) or
`maxUnavailable`, and `disruptionsAllowed` is what is left (never below 0), as the real controller
computes it (https://kubernetes.io/docs/tasks/run-application/configure-pdb/#think-about-how-your-application-reacts-to-disruptions).
A budget set by a simulation with a status of its own (a scale-down blocker) is recomputed the same way.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from ..stores.kube import RT_PDB
from .util import kube_clusters, match_selector, write_status

if TYPE_CHECKING:
    from ..core import SandboxContext as Sandbox


def _count(value, total: int, round_up: bool) -> int:
    if isinstance(value, str) and value.endswith("%"):
        share = total * float(value[:-1]) / 100
        return math.ceil(share) if round_up else math.floor(share)
    return int(value)


def covers(pdb: dict, pod: dict) -> bool:
    """policy/v1: a budget selects pods of its own namespace; an empty selector every one, a missing one none."""
    selector = (pdb.get("spec") or {}).get("selector")
    return (pdb["metadata"].get("namespace") == pod["metadata"].get("namespace") and selector is not None
            and match_selector(selector, pod["metadata"].get("labels")))


def allows_none(pdb: dict) -> bool:
    return int((pdb.get("status") or {}).get("disruptionsAllowed") or 0) < 1


def pdb_status(pdb: dict, pods: list[dict]) -> dict:
    spec = pdb.get("spec") or {}
    matched = [p for p in pods if covers(pdb, p)]
    healthy = sum(1 for p in matched if (p.get("status") or {}).get("phase") == "Running")
    if "minAvailable" in spec:
        desired = _count(spec["minAvailable"], len(matched), True)
    else:
        desired = len(matched) - _count(spec.get("maxUnavailable", 0), len(matched), False)
    return {"currentHealthy": healthy, "desiredHealthy": desired, "expectedPods": len(matched),
            "disruptionsAllowed": max(0, healthy - desired), "observedGeneration": pdb["metadata"].get("generation", 1)}


def disruption_budgets(sb: "Sandbox") -> None:
    for kube in kube_clusters(sb):
        pdbs = kube.list_objects(RT_PDB.group, RT_PDB.plural)
        if not pdbs:
            continue
        pods = kube.list_objects("", "pods")
        for pdb in pdbs:
            status = pdb_status(pdb, pods)
            old = pdb.get("status") or {}
            if any(old.get(k) != v for k, v in status.items() if k != "observedGeneration"):
                write_status(kube, RT_PDB, pdb, {**old, **status})
