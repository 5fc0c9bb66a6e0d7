"""Actions, plans and fingerprints: what every asset's plan step produces and records."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, is_dataclass
from dataclasses import field as dc_field
from typing import Any, Literal

# "wait": GKE is busy with an operation already in flight (say, from an interrupted run); apply waits
# for it instead of starting another, then plans again. "delete": only in a pause the user declared
# (lifecycle: paused), and only with the destroy approval.
ActionKind = Literal["create", "update", "replace", "wait", "delete", "cannot-fix"]


@dataclass(frozen=True)
class Action:
    """One step of a plan. `field` names the owned field an update changes."""

    kind: ActionKind
    target: str
    field: str = ""
    desired: Any = None
    observed: Any = None
    needs_approval: bool = False
    remedy: str = ""
    # Free-form arguments the apply step needs (never shown, never hashed).
    args: dict = dc_field(default_factory=dict, compare=False, hash=False)

    def summary(self) -> str:
        what = f"{self.kind} {self.target}" + (f" {self.field}" if self.field else "")
        if self.kind == "update":
            what += f": {_short(self.observed)} -> {_short(self.desired)}"
        elif self.kind == "cannot-fix" and isinstance(self.observed, str) and self.observed:
            what += f": {self.observed}"  # what is wrong, whole: the person reading it has to act on it
        if self.remedy:
            what += f" ({self.remedy})"
        return what

    def public(self) -> dict:
        d = asdict(self)
        d.pop("args")
        return d


def _short(v: Any) -> str:
    text = json.dumps(v, sort_keys=True, default=str) if not isinstance(v, str) else v
    return text if len(text) <= 80 else text[:77] + "..."


def plan_table(actions: list[Action]) -> str:
    """The plan as a Markdown table (what the materialization page shows)."""
    if not actions:
        return "No changes: the live state matches the config."
    rows = ["| action | target | field | observed | desired | approval | remedy |",
            "|---|---|---|---|---|---|---|"]
    for a in actions:
        cells = [a.kind, a.target, a.field, _short(a.observed) if a.observed is not None else "",
                 _short(a.desired) if a.desired is not None else "", "needed" if a.needs_approval else "",
                 a.remedy]
        rows.append("| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |")
    return "\n".join(rows)


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def fingerprint(observed: Any) -> str:
    """Stable hash of the normalized observed state: the materialization's data version."""
    return hashlib.sha256(canonical(observed).encode()).hexdigest()[:16]


def desired_fingerprint(spec: Any) -> str:
    """Stable hash of a desired state (a spec): what a materialization applied, to tell a config that
    moved (a change someone is making) from live state that moved (drift)."""
    data = asdict(spec) if is_dataclass(spec) and not isinstance(spec, type) else spec
    return hashlib.sha256(canonical(data).encode()).hexdigest()[:16]


def plan_hash(actions: list[Action]) -> str:
    """Stable hash of a plan: the same drift hashes the same on every sensor tick."""
    return hashlib.sha256(canonical([a.public() for a in actions]).encode()).hexdigest()[:12]


def mutating(actions: list[Action]) -> list[Action]:
    return [a for a in actions if a.kind != "cannot-fix"]
