"""The scale-to-zero guard: a GPU node idle past the grace period is named, priced and acted on.

Per environment with a scale-to-zero GPU pool (GKE, `substrate.gpu_pool.min: 0`), every tick lists
the pool's nodes and the pods on them. The cursor remembers since when each GPU node has run no pod
requesting `nvidia.com/gpu` (the cursor's only content besides what was already reported). A node
idle for longer than `substrate.gpu_pool.scale_to_zero_grace_minutes` (default 20: GKE's 10-minute
scale-down window plus 10) should have been removed by the autoscaler; the guard then

- fails gpu_pool's `scales_to_zero` check for that environment, naming every blocker pod by the
  cluster autoscaler's rules (`gpuplat_assets.scale_to_zero`) and what the idle node costs per hour;
- requests one rematerialization of gpu_pool (it re-asserts autoscaling min 0; its checks then
  report the blockers again), unless the environment's remediation is `report`. The run key names
  the nodes and since when they are idle, so one stuck episode starts one run.

When the stuck nodes are gone (the pool reached zero) or busy again, a passing evaluation clears
the failure. A healthy pool that scales to zero by itself never shows up.
"""

from __future__ import annotations

import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

from dagster import (
    AssetCheckEvaluation,
    AssetCheckKey,
    AssetCheckSeverity,
    AssetKey,
    AssetSelection,
    DefaultSensorStatus,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from gpuplat_assets.assets import PARTITIONS, SENSOR_TAG
from gpuplat_assets.config import ConfigError, EnvConfig, environments_dir, load_environments
from gpuplat_assets.gpu_pool import PIECE as GPU_POOL
from gpuplat_assets.prices import Cost, cluster_cost, node_price
from gpuplat_assets.scale_to_zero import (
    CHECK_NAME,
    Diagnosis,
    applies_to,
    diagnose,
    metadata,
    observe_scale_to_zero,
    summary,
)
from resources import GpuplatResource
from resources.errors import describe
from resources.memo import Answers

from .drift import NOT_MATERIALIZED, QuietLog, env_run, start_sandbox_once

DEFAULT_INTERVAL_S = 60
TRIGGER = "scale-to-zero-guard"
WORKERS = 8

_log = logging.getLogger("gpuplat.sensors.scale_to_zero")


@dataclass
class GuardReport:
    name: str
    skipped: str = ""
    error: str = ""
    remediation: str = "auto"
    idle_since: dict[str, float] = field(default_factory=dict)  # this tick's view, for the cursor
    diagnosis: Diagnosis | None = None
    cost: Cost | str | None = None  # what the environment costs now (fee and every node), or why unknown


def observe_guard_env(resource: GpuplatResource, name: str, root: Path | None, materialized: set[str],
                      previous: dict[str, float], now: float | None, answers: Answers | None = None,
                      env: EnvConfig | None = None) -> GuardReport:
    """One environment: the pool's autoscaling, its nodes and pods, since when each node is idle."""
    try:
        run = env_run(resource, name, root, QuietLog(_log, name), answers, env)
    except ConfigError as exc:
        return GuardReport(name, error=str(exc))
    env = run.env
    if not applies_to(env):
        return GuardReport(name, skipped="no scale-to-zero GPU pool")
    if name not in materialized:
        return GuardReport(name, skipped=f"gpu_pool {NOT_MATERIALIZED}")
    grace_s = env.substrate.gpu_pool.scale_to_zero_grace_minutes * 60.0
    try:
        if now is None:  # the cluster's clock: node and pod timestamps are in it (simulated on the sandbox)
            now = run.conn.now()
        cluster = run.conn.google.get_cluster(env.cluster.location, env.cluster.name)
        pool = cluster.pool(env.substrate.gpu_pool.name) if cluster else None
        if pool is None:
            return GuardReport(name, skipped=f"GPU pool {env.substrate.gpu_pool.name} does not exist")
        facts = observe_scale_to_zero(run, pool)
        idle_since = {}
        if not facts.error:
            first = diagnose(facts)
            # The cluster's record first (a node idle since before the guard ever looked is late on the
            # guard's first tick), never earlier than this guard last saw the node busy: a GPU pod
            # deleted outright leaves no record. Busy nodes are kept as "busy at now" for that.
            idle_since = {n: max(facts.quiet_since.get(n, now), previous.get(n, 0.0)) for n in first.idle}
            idle_since.update({n: now for n in first.busy})
        d = diagnose(facts, idle_since, now, grace_s)
        if d.stuck and d.price is None:
            node = next(n for n in facts.gpu_nodes if n.name == d.stuck[0])
            d = replace(d, price=node_price(run, node))
        cost = None if facts.error else cluster_cost(run, [*facts.gpu_nodes, *facts.other_nodes],
                                                     env.cluster.location.count("-") == 2)
    except Exception as exc:  # one environment's outside world must not stop the others
        text = describe(exc)
        if text is None:
            _log.exception(f"[{name}] scale-to-zero guard raised {type(exc).__name__}")
            text = f"unexpected {type(exc).__name__}: {exc}"
        return GuardReport(name, error=f"cannot observe the GPU pool: {text}", remediation=env.remediation,
                           idle_since=dict(previous))
    if d.error:  # the nodes could not be read: keep what we knew
        return GuardReport(name, error=d.error, remediation=env.remediation, idle_since=dict(previous))
    return GuardReport(name, remediation=env.remediation, idle_since=idle_since, diagnosis=d, cost=cost)


@dataclass
class GuardCursor:
    idle: dict[str, dict[str, float]] = field(default_factory=dict)  # env -> node -> idle since
    reported: dict[str, dict[str, float]] = field(default_factory=dict)  # env -> node -> idle since, reported

    @classmethod
    def load(cls, raw: str | None) -> "GuardCursor":
        try:
            data = json.loads(raw) if raw else {}
        except ValueError:
            data = {}
        return cls(dict(data.get("idle") or {}), dict(data.get("reported") or {}))

    def dump(self) -> str:
        return json.dumps({"idle": self.idle, "reported": self.reported}, sort_keys=True, separators=(",", ":"))


def guard_run_key(env: str, stuck: dict[str, float]) -> str:
    return f"{env}:gpu_pool:scale-to-zero:" + ",".join(f"{n}@{int(t)}" for n, t in sorted(stuck.items()))


def evaluate_guard(reports: list[GuardReport], cursor: GuardCursor) -> tuple[list[RunRequest], list, list[str]]:
    """Pure: this tick's reports and the cursor -> run requests, check evaluations, notes for the skip reason."""
    runs: list[RunRequest] = []
    events: list = []
    notes: list[str] = []
    key = AssetKey(GPU_POOL.name)
    checks = [AssetCheckKey(key, n) for n in ("in_sync", *(c.name for c in GPU_POOL.checks))]
    for r in reports:
        if r.skipped:
            cursor.idle.pop(r.name, None)
            notes.append(f"{r.name}: {r.skipped}")
            continue
        cursor.idle[r.name] = r.idle_since
        if r.error:
            notes.append(f"{r.name}: {r.error}")
            continue
        d = r.diagnosis
        reported = cursor.reported.get(r.name, {})
        stuck = {n: r.idle_since[n] for n in d.stuck}
        new = {n: t for n, t in stuck.items() if reported.get(n) != t}
        if new:
            meta = metadata(d)
            if isinstance(r.cost, Cost):
                meta["environment_cost_per_hour"] = f"{r.cost.per_hour:.2f} {r.cost.currency}/h (fee and every node)"
            meta["idle_since"] = ", ".join(f"{n}: {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(t))}"
                                           for n, t in sorted(stuck.items()))
            if r.remediation == "auto":
                rk = guard_run_key(r.name, new)
                meta["run_key"] = rk
                runs.append(RunRequest(run_key=rk, partition_key=r.name, asset_selection=[key],
                                       asset_check_keys=checks, tags={SENSOR_TAG: TRIGGER}))
            events.append(AssetCheckEvaluation(
                asset_key=key, check_name=CHECK_NAME, passed=False, partition=r.name,
                severity=AssetCheckSeverity.ERROR, description=summary(d)[:1000], metadata=meta))
            cursor.reported[r.name] = stuck
        elif reported and not stuck:
            events.append(AssetCheckEvaluation(
                asset_key=key, check_name=CHECK_NAME, passed=True, partition=r.name,
                description=f"{', '.join(sorted(reported))} no longer idle past the grace period: " + summary(d),
                metadata=metadata(d)))
            cursor.reported.pop(r.name, None)
        else:
            notes.append(f"{r.name}: {summary(d)}" + (" (already reported)" if stuck else ""))
    notes += running_costs(reports)
    live = {r.name for r in reports}
    for table in (cursor.idle, cursor.reported):
        for env in [e for e in table if e not in live]:
            del table[env]
    return runs, events, notes


def running_costs(reports: list[GuardReport]) -> list[str]:
    """What the watched environments cost now, summed per currency, each named."""
    by_currency: dict[str, list[tuple[str, float]]] = {}
    for r in reports:
        if isinstance(r.cost, Cost):
            by_currency.setdefault(r.cost.currency, []).append((r.name, r.cost.per_hour))
    return [f"running now: {sum(v for _, v in parts):.2f} {currency}/h across {len(parts)} environment(s) ("
            + ", ".join(f"{n} {v:.2f}" for n, v in parts) + ")" for currency, parts in sorted(by_currency.items())]


def build_scale_to_zero_sensor(name: str = "scale_to_zero_guard", environments_root: Path | None = None,
                               minimum_interval_seconds: int = DEFAULT_INTERVAL_S,
                               clock: Callable[[], float] | None = None, workers: int = WORKERS,
                               default_status: DefaultSensorStatus = DefaultSensorStatus.RUNNING):
    """The guard over the environments under `environments_root`; `clock` (default: each environment's
    cluster clock, the sandbox's simulated one on the sandbox) is injectable for tests."""

    @sensor(name=name, target=AssetSelection.assets(GPU_POOL.name), default_status=default_status,
            minimum_interval_seconds=minimum_interval_seconds,
            description="A GPU node idle past the grace period fails gpu_pool's scales_to_zero check with every "
                        "blocker pod named and the idle cost, and requests a gpu_pool rematerialization.")
    def _guard(context: SensorEvaluationContext, gpuplat: GpuplatResource):
        root = environments_root or environments_dir()
        found = load_environments(root)
        partitions = set(PARTITIONS.get_partition_keys())
        names = [n for n in found.names if n in partitions]
        materialized = context.instance.get_materialized_partitions(AssetKey(GPU_POOL.name))
        start_sandbox_once(gpuplat, [found.configs[n] for n in names if n in found.configs])
        cursor = GuardCursor.load(context.cursor)
        now = clock() if clock else None
        answers = Answers()

        def observe(n: str) -> GuardReport:
            if n in found.errors:
                return GuardReport(n, error=found.errors[n])
            return observe_guard_env(gpuplat, n, root, materialized, cursor.idle.get(n, {}), now, answers,
                                     found.configs[n])

        if workers <= 1 or len(names) <= 1:
            reports = [observe(n) for n in names]
        else:
            with ThreadPoolExecutor(max_workers=min(workers, len(names)), thread_name_prefix="gpuplat-guard") as pool:
                reports = list(pool.map(observe, names))
        runs, events, notes = evaluate_guard(reports, cursor)
        for r in reports:
            if r.error:
                context.log.warning(f"scale-to-zero guard: {r.name}: {r.error}")
        if runs or events:
            return SensorResult(run_requests=runs, asset_events=events, cursor=cursor.dump())
        text = "no GPU node idle past its grace period" + (": " + "; ".join(notes) if notes else "")
        return SensorResult(skip_reason=SkipReason(text[:2000]), cursor=cursor.dump())

    return _guard


scale_to_zero_guard = build_scale_to_zero_sensor()
