"""What every reaction's tick shares: the environments to look at, read-only runs, side-by-side reads.

A tick reads the environments folder as it is now, and looks only at environments that are partitions
(the environments sensor adds new ones) and were materialized (bringing an environment up is a
person's decision). Each environment gets a read-only `Run` whose clients share one tick's answers
(`resources/memo.py`) with the other environments of its project or kubeconfig; environments are
observed side by side, since each waits mostly on its APIs.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Iterable, TypeVar

from dagster import AssetCheckKey, RunRequest

from resources import GpuplatResource
from resources.memo import Answers, memoize
from resources.models import KubeIdentity
from substrate import history
from substrate.approval import SENSOR_TAG
from substrate.config import EnvConfig
from substrate.environments import Environments, environments_dir, load_environments
from substrate.partitions import known
from substrate.jobs import SUBSTRATE_JOB
from substrate.piece import Run, target_of

WORKERS = 8
REPORT_TAG = "gpuplat/report"
# Transient errors are retried for a while, but not past the tick: Dagster gives a sensor 60 s.
TICK_RETRY_DEADLINE_S = 20.0
NOT_MATERIALIZED = "not yet materialized"

T = TypeVar("T")


class QuietLog:
    """What a piece logs while observing (its kube target, ...) goes to debug: a tick is not a run."""

    def __init__(self, logger: logging.Logger, env: str):
        self._logger, self._env = logger, env

    def debug(self, msg, *a, **k):
        self._logger.debug(f"[{self._env}] {msg}", *a, **k)

    info = debug

    def warning(self, msg, *a, **k):
        self._logger.warning(f"[{self._env}] {msg}", *a, **k)

    def error(self, msg, *a, **k):
        self._logger.error(f"[{self._env}] {msg}", *a, **k)

    def exception(self, msg, *a, **k):
        self._logger.exception(f"[{self._env}] {msg}", *a, **k)


@dataclass(frozen=True)
class Fleet:
    """This tick's environments: what the folder holds, and which of them are partitions."""

    found: Environments
    partitions: set[str]

    @property
    def names(self) -> list[str]:
        """Environments to look at: partitions whose folder exists (a config error included)."""
        return [n for n in self.found.names if n in self.partitions]

    def unknown(self) -> list[str]:
        return [n for n in self.found.names if n not in self.partitions]


def fleet(instance, root=None) -> Fleet:
    return Fleet(load_environments(root or environments_dir()), known(instance))


def env_run(resource: GpuplatResource, env: EnvConfig, logger: logging.Logger, answers: Answers | None = None,
            identity: KubeIdentity | None = None, memory: history.Recollections | None = None) -> Run:
    """A read-only `Run` for one environment outside any op: memoized clients, no approval; it reads what
    runs recorded (the pause's record) from the tick's `memory`, and records nothing."""
    conn = memoize(resource.connect(target_of(env, identity), retry_deadline=TICK_RETRY_DEADLINE_S), answers)
    run = Run(env, conn, QuietLog(logger, env.name), approved=False)
    if memory is not None:
        run.recall = lambda asset, key: memory.recall(asset, env.name, key)
    return run


def tick_projects(envs: Iterable[EnvConfig]) -> dict[tuple[str, str], int]:
    """How many of a tick's GKE environments are in each (project, location): where several are, their
    clusters are read with one list (resources/memo.py)."""
    return dict(Counter((e.cluster.projectID, e.cluster.location) for e in envs if e.is_gke))


def start_sandbox_once(resource: GpuplatResource, envs: list[EnvConfig]) -> None:
    """Start the on-demand sandbox here, before the environments are observed side by side: each
    thread would otherwise find it down and start its own."""
    env = next((e for e in envs if e.substrate.sandbox), None)
    if env is not None:
        resource.connect(target_of(env)).sandbox_urls  # noqa: B018 - starts it when it is not running


def side_by_side(fn: Callable[[str], T], names: list[str], workers: int = WORKERS, prefix: str = "gpuplat") -> list[T]:
    if workers <= 1 or len(names) <= 1:
        return [fn(n) for n in names]
    with ThreadPoolExecutor(max_workers=min(workers, len(names)), thread_name_prefix=prefix) as pool:
        return list(pool.map(fn, names))


class Pace:
    """How many threads a sensor observes its environments with: as many as keep one core busy, at most `most`.

    The threads are there to wait on the APIs side by side; the GIL lets one of them compute at a time. When
    the APIs answer fast (the sandbox, an API server next door) the threads mostly compute, and more of them
    only hand the GIL to one another: on the project's 2-core benchmark machine a 50-environment drift tick
    cost 9.0 ms of CPU per environment with one thread, 12.5 with three and 13.5-15.2 with eight, in the same
    wall time (0.63-0.85 s; benchmarks/drift_tick.py --workers). So each tick measures how busy its threads
    kept the interpreter (their CPU time over the tick's wall time), and the next tick halves the threads when
    that is 60% of a core or more, or doubles them, up to `most`, when it is under 25%: they mostly waited (a
    real cloud's latency). At 500 sandbox environments four threads kept 70-75% busy and one thread 53-57%:
    more threads there raised the share little and the CPU a lot. Doubling the threads can about double the
    share, not more: with the two bounds more than twice apart, a count halved is not doubled straight back."""

    BUSY, WAITING = 0.6, 0.25

    def __init__(self, most: int = WORKERS):
        self.most = max(1, most)
        self.workers = self.most
        self.busy = 0.0  # the last tick's: its threads' CPU over its wall time

    def map(self, fn: Callable[[str], T], names: list[str], prefix: str = "gpuplat") -> list[T]:
        cpu: list[float] = []

        def timed(name: str) -> T:
            started = time.thread_time()
            try:
                return fn(name)
            finally:
                cpu.append(time.thread_time() - started)

        started = time.perf_counter()
        out = side_by_side(timed, names, self.workers, prefix)
        if len(names) > 1:
            self.learn(sum(cpu), time.perf_counter() - started)
        return out

    def learn(self, cpu_s: float, wall_s: float) -> None:
        self.busy = cpu_s / wall_s if wall_s > 0 else 0.0
        if self.busy >= self.BUSY:
            self.workers = max(1, self.workers // 2)
        elif self.busy < self.WAITING:
            self.workers = min(self.most, self.workers * 2)


# A fleet this large keeps ~1,000 objects per environment for the process's life (each cluster's client,
# its discovery cache, parsed files): half a million at 500 environments, which every full collection
# walked, once or twice a tick (0.6-0.7 s each at 500).
FREEZE_FLEET = 100
_frozen = False
_frozen_lock = threading.Lock()


def freeze_long_lived(n_envs: int) -> bool:
    """After the first tick over a fleet of `n_envs` >= FREEZE_FLEET, once per process: collect, then move
    every object alive to the collector's permanent generation (`gc.freeze`), so later full collections walk
    only what came after. What is frozen and dies later is still freed by reference counting; only cycles
    among those objects stay, bounded by what was frozen here, never growing tick after tick. Returns whether
    it froze now."""
    global _frozen
    if n_envs < FREEZE_FLEET:
        return False
    with _frozen_lock:
        if _frozen:
            return False
        _frozen = True
    import gc
    gc.collect()  # nothing unreachable is frozen
    gc.freeze()
    return True


def seconds_from_env(var: str, default: int) -> int:
    """A sensor's minimum interval from the environment variable `var` (>= 1; unset or invalid: `default`)."""
    raw = os.environ.get(var, "")
    try:
        return max(1, int(raw)) if raw else default
    except ValueError:
        return default


def load_cursor(raw: str | None) -> dict[str, Any]:
    import json
    try:
        data = json.loads(raw) if raw else {}
    except ValueError:
        data = {}
    return data if isinstance(data, dict) else {}


def report_run(env: str, checks: list[AssetCheckKey], key: str, trigger: str, why: str) -> RunRequest:
    """A checks-only run of `checks` for `env`: how a finding shows on the environment's partition (a check
    result outside a run cannot be stored twice for a partition in Dagster 1.13). It changes nothing."""
    return RunRequest(run_key=key, job_name=SUBSTRATE_JOB, partition_key=env, asset_check_keys=checks,
                      tags={SENSOR_TAG: trigger, REPORT_TAG: why[:200]})
