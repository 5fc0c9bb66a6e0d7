"""The shape every substrate piece follows: desired -> observe -> plan -> apply, plus its checks.

A `Piece` holds the four steps of one asset; `assets.py` turns each into a partitioned Dagster
asset and its asset checks, and the drift sensor runs the read-only half (observe + plan).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

from resources import Connection, Target
from resources.models import KubeIdentity

from .config import EnvConfig
from .plan import Action


class PieceError(Exception):
    """A permanent failure a piece explains itself (what happened and the remedy) in one line."""


@dataclass
class Run:
    """What observe and apply get: the environment, its clients, a logger and the approval."""

    env: EnvConfig
    conn: Connection
    log: Any
    approved: bool = False
    # Facts a step learns that a later step of the same piece needs (e.g. an operation in flight).
    notes: dict = field(default_factory=dict)

    def progress(self, what: str) -> Callable[[float, str], None]:
        return lambda elapsed, state: self.log.info(f"{what}: still {state} after {elapsed:.0f}s")


@dataclass(frozen=True)
class Outcome:
    passed: bool
    description: str
    metadata: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Check:
    name: str
    description: str
    evaluate: Callable[[Any, Any, EnvConfig], Outcome]
    blocking: bool = False


@dataclass(frozen=True)
class Piece:
    name: str
    description: str
    group: str
    kinds: frozenset[str]
    deps: tuple[str, ...]
    owned_fields: tuple[str, ...]
    desired: Callable[[EnvConfig], Any]
    observe: Callable[[Run, Any], Any]
    plan: Callable[[Any, Any], list[Action]]
    apply: Callable[[Run, Any, Any, list[Action]], None]
    checks: tuple[Check, ...] = ()
    # With lifecycle: paused, only the pieces that keep something (APIs, identities, secrets) or tear
    # the substrate down (cluster) run; the others have nothing to keep and change nothing.
    runs_when_paused: bool | Callable[[EnvConfig], bool] = False
    # Metadata only a materialization computes (it may cost reads a sensor tick should not make).
    report: Callable[[Run, Any, Any], dict] | None = None
    # Metadata shown on the materialization page besides plan and observed state: links (URLs) and
    # facts recorded for later runs (JSON), such as the kube target's identity.
    links: Callable[[EnvConfig, Any], dict] = lambda env, observed: {}
    record: Callable[[EnvConfig, Any], dict] = lambda env, observed: {}
    # Where the desired state was read from (the platform fork and its commit), as text metadata.
    provenance: Callable[[Any], dict[str, str]] = lambda spec: {}


def target_of(env: EnvConfig, identity: KubeIdentity | None = None) -> Target:
    """`identity`: the kube target recorded at this environment's first materialization, if any."""
    return Target(env=env.name, kind=env.substrate.kind, project=env.cluster.projectID,
                  location=env.cluster.location, cluster=env.cluster.name, sandbox=env.substrate.sandbox,
                  kubeconfig=env.substrate.kubeconfig, kubeconfig_env=env.kubeconfig_env,
                  identity=None if env.is_gke else identity)


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, log, interval: float = 1.0,
               progress_every: float = 15.0, sleeper=time.sleep, timer=time.monotonic):
    """Poll `predicate` until truthy; log progress regularly; return the last value (falsy on timeout)."""
    start = last = timer()
    while True:
        value = predicate()
        if value:
            return value
        now = timer()
        if now - start >= timeout:
            return value
        if now - last >= progress_every:
            log.info(f"waiting for {what}: {now - start:.0f}s elapsed (limit {timeout:.0f}s)")
            last = now
        sleeper(interval)


def rests(piece: Piece, env: EnvConfig) -> bool:
    """Whether `piece` does nothing in this environment because it is paused."""
    keeps = piece.runs_when_paused(env) if callable(piece.runs_when_paused) else piece.runs_when_paused
    return env.paused and not keeps
