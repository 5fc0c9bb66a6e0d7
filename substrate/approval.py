"""Who may change what: the approvals a run carries, and the exact words that ask for them.

Creating a cluster or a node pool costs money: it needs `GPUPLAT_AUTO_APPROVE=1` or the run tag
`gpuplat/approve=true` (the seed's `AUTO_APPROVE=1 make tf-apply`). Deleting, which only a declared
pause does, has an approval of its own, asked even on the sandbox. A run a sensor started never has
either: what needs a person is reported to that person instead (`command` gives the exact line).
"""

from __future__ import annotations

import os
from typing import Mapping

from .config import EnvConfig
from .piece import PieceError
from .plan import Action

APPROVE_VAR = "GPUPLAT_AUTO_APPROVE"
APPROVE_TAG = "gpuplat/approve"
DESTROY_VAR = "GPUPLAT_APPROVE_DESTROY"
DESTROY_TAG = "gpuplat/approve-destroy"
# Set on every run a sensor or schedule starts (its value says which).
SENSOR_TAG = "gpuplat/trigger"
ERR_APPROVAL = "approval needed"
ERR_DESTROY_APPROVAL = "destroy approval needed"


class ApprovalNeeded(PieceError):
    """The plan creates something that costs money and nobody approved it: nothing was changed."""


class DestroyApprovalNeeded(PieceError):
    """The pause's plan deletes and nobody approved deleting: nothing was changed."""


def approval_source(tags: Mapping[str, str], env: EnvConfig) -> str:
    """Who approved paid or replacing changes for this run, or "" when nobody did."""
    if not env.needs_approval:
        return "not needed: the sandbox costs nothing"
    if tags.get(SENSOR_TAG):
        return ""  # a sensor never applies a paid or replacing change
    if tags.get(APPROVE_TAG) == "true":
        return f"run tag {APPROVE_TAG}=true"
    return f"{APPROVE_VAR}=1" if os.environ.get(APPROVE_VAR) == "1" else ""


def destroy_source(tags: Mapping[str, str]) -> str:
    """Who approved deleting for this run ("" when nobody did; a sensor run never deletes)."""
    if tags.get(SENSOR_TAG):
        return ""
    if tags.get(DESTROY_TAG) == "true":
        return f"run tag {DESTROY_TAG}=true"
    return f"{DESTROY_VAR}=1" if os.environ.get(DESTROY_VAR) == "1" else ""


def command(asset: str, env: str, destroy: bool = False) -> str:
    """The exact command that applies `asset`'s plan for `env` with the approval it needs."""
    var = DESTROY_VAR if destroy else APPROVE_VAR
    return f"{var}=1 dagster asset materialize -m gpuplat_assets --select {asset} --partition {env}"


def person_for(actions: list[Action]) -> str:
    """What only a person can do about this plan: "destroy" (the destroy approval), "approval" (a paid or
    replacing change), "cannot-fix" (no run can change it), or "" (a run without approval applies it)."""
    if any(a.kind == "delete" for a in actions):
        return "destroy"
    if any(a.needs_approval for a in actions):
        return "approval"
    if any(a.kind == "cannot-fix" for a in actions):
        return "cannot-fix"
    return ""


def needs_person(actions: list[Action]) -> bool:
    """Whether a run without any approval could not apply this plan (what a sensor must report instead)."""
    return bool(person_for(actions))


def approval_message(asset: str, env: EnvConfig, actions: list[Action], sensor_run: bool) -> str:
    pending = [a.summary() for a in actions if a.needs_approval]
    if sensor_run:
        how = "a drift-sensor run never applies changes that need approval: materialize it yourself"
    else:
        how = f"approve with {command(asset, env.name)}, or launch the run with tag {APPROVE_TAG}=true"
    return f"{ERR_APPROVAL} for {asset} in {env.name}: {'; '.join(pending)}. {how}"


def destroy_message(asset: str, env: EnvConfig, actions: list[Action], sensor_run: bool) -> str:
    steps = "; ".join(a.summary() for a in actions if a.kind == "delete")
    if sensor_run:
        how = "A drift-sensor run never deletes: materialize it yourself with the destroy approval"
    else:
        how = (f"Approve with {command(asset, env.name, destroy=True)}, or launch the run with tag "
               f"{DESTROY_TAG}=true (the create approval {APPROVE_TAG} does not cover it)")
    return (f"{ERR_DESTROY_APPROVAL} for {asset} in {env.name} (lifecycle: paused): nothing was changed. "
            f"Planned: {steps}. {how}")
