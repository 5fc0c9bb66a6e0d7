"""The shape every substrate piece follows: desired -> observe -> plan -> apply, plus its checks.

A `Piece` is one asset: its name, lineage and checks, and the `Steps` it runs. `variant(env)` picks the
steps for an environment: the piece itself while the environment runs; while it is paused (`lifecycle:
paused`) a piece that keeps something (APIs, identities, secrets) runs as usual, the cluster runs the
pause (`pause.Pause`), and every other piece rests (`Resting`: nothing observed, nothing changed, its
checks pass as paused). `reconcile` (substrate/reconcile.py) and the drift sensor call only these
methods, so a reader (or a tool) follows them straight into each asset's module.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Generic, TypeVar

from resources import Connection, Target
from resources.errors import GpuplatError
from resources.models import KubeIdentity

from .config import EnvConfig
from .plan import Action

S = TypeVar("S")  # what a piece's desired step computes (its spec)
O = TypeVar("O")  # what its observe step reads (normalized to the fields it owns)

PAUSED = "paused (lifecycle: paused): nothing of this asset runs while the environment is paused"


class PieceError(GpuplatError):
    """A permanent failure a piece explains itself (what happened and the remedy) in one line."""


class NotReady(PieceError):
    """Something the piece applied did not become ready within its bounded wait."""


def _nowhere(asset: str, key: str, value: Any) -> None:
    raise PieceError("nothing can be recorded here: this run has no Dagster instance to keep it")


def _nothing(asset: str, key: str) -> Any:
    return None


@dataclass
class Run:
    """What observe and apply get: the environment, its clients, a logger and the approval."""

    env: EnvConfig
    conn: Connection
    log: Any
    approved: bool = False
    # Facts a step learns that a later step of the same piece needs (e.g. an operation in flight).
    notes: dict = field(default_factory=dict)
    # Facts of this piece in this environment that must outlive the run (the pause's record of what it
    # owns and what it changed): kept in the Dagster instance, so a later run finds them even when this
    # one stops half-way, on whichever host it runs.
    # Both take the asset the fact belongs to and a key; remember also the value (JSON).
    remember: Callable[[str, str, Any], None] = _nowhere
    recall: Callable[[str, str], Any] = _nothing

    def progress(self, what: str) -> Callable[[float, str], None]:
        return lambda elapsed, state: self.log.info(f"{what}: still {state} after {elapsed:.0f}s")


@dataclass(frozen=True)
class Outcome:
    passed: bool
    description: str
    metadata: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Check(Generic[S, O]):
    """One asset check: a property of the desired and observed state, with its remedy when it fails."""

    name: str
    description: str
    evaluate: Callable[[S, O, EnvConfig], Outcome]
    blocking: bool = False


class Steps(ABC, Generic[S, O]):
    """The four steps, and how this variant answers the asset's checks."""

    # A variant that does nothing (a resting piece of a paused environment): the drift sensor skips it.
    rests: ClassVar[bool] = False

    @abstractmethod
    def desired(self, env: EnvConfig) -> S:
        """The spec, from the environment config (and the platform fork) alone: no call to anything."""

    @abstractmethod
    def observe(self, run: Run, spec: S) -> O:
        """The live state, read with as few calls as possible, normalized to the fields this piece owns."""

    @abstractmethod
    def plan(self, spec: S, observed: O) -> list[Action]:
        """What it takes to make `observed` what `spec` says: pure."""

    @abstractmethod
    def apply(self, run: Run, spec: S, observed: O, actions: list[Action]) -> None:
        """Carry out `actions`, idempotently."""

    def evaluate(self, check: Check, spec: S, observed: O, env: EnvConfig) -> Outcome:
        return check.evaluate(spec, observed, env)

    def report(self, run: Run, spec: S, observed: O) -> dict:
        """Metadata only a materialization computes (it may cost reads a sensor tick should not make)."""
        return {}

    def links(self, env: EnvConfig, observed: O) -> dict[str, str]:
        """URLs shown on the materialization page (the console)."""
        return {}

    def record(self, env: EnvConfig, observed: O) -> dict:
        """Facts recorded for later runs (JSON), such as the kube target's identity."""
        return {}

    def provenance(self, spec: S) -> dict[str, str]:
        """Where the desired state was read from (the platform fork and its commit)."""
        return {}


class Piece(Steps[S, O]):
    """One substrate piece: a partitioned asset with its lineage and checks, running its `Steps`."""

    name: ClassVar[str]
    description: ClassVar[str]
    group: ClassVar[str]
    kinds: ClassVar[frozenset[str]]
    deps: ClassVar[tuple[str, ...]]
    owned_fields: ClassVar[tuple[str, ...]]
    checks: ClassVar[tuple[Check, ...]] = ()

    def keeps_when_paused(self, env: EnvConfig) -> bool:
        """Whether this piece keeps something of a paused environment (and so runs as usual)."""
        return False

    def paused_steps(self, env: EnvConfig) -> Steps:
        """What runs for a paused environment when the piece keeps nothing."""
        return RESTING

    def variant(self, env: EnvConfig) -> Steps:
        """The steps that run for this environment."""
        if env.paused and not self.keeps_when_paused(env):
            return self.paused_steps(env)
        return self

    def check_names(self) -> tuple[str, ...]:
        return ("in_sync", *(c.name for c in self.checks))


class Resting(Steps[None, None]):
    """A piece of a paused environment that keeps nothing: nothing is read or changed, checks pass."""

    rests = True

    def desired(self, env: EnvConfig) -> None:
        return None

    def observe(self, run: Run, spec: None) -> None:
        return None

    def plan(self, spec: None, observed: None) -> list[Action]:
        return []

    def apply(self, run: Run, spec: None, observed: None, actions: list[Action]) -> None:
        return None

    def evaluate(self, check: Check, spec: None, observed: None, env: EnvConfig) -> Outcome:
        return Outcome(True, PAUSED)


RESTING = Resting()


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
