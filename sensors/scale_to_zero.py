"""The scale-to-zero guard: a GPU node idle past the grace period is named, priced and reported.

Per environment with a scale-to-zero GPU pool (GKE, `substrate.gpu_pool.min: 0`), every tick lists
the pool's nodes and the pods on them. The cursor remembers since when each GPU node has run no pod
requesting `nvidia.com/gpu` (never earlier than the guard last saw it busy). A node idle for longer
than `substrate.gpu_pool.scale_to_zero_grace_minutes` (default 20: GKE's 10-minute scale-down window
plus 10) should have been removed by the autoscaler; the guard then reports it, once per stuck
episode: an `AssetObservation` on gpu_pool with every blocker pod named by the cluster autoscaler's
rules and what the idle node costs per hour, and a checks-only run of gpu_pool's `scales_to_zero`
check, which fails for the same reason. When the stuck nodes are gone or busy again, one more such
run turns the check green. A healthy pool that scales to zero by itself never shows up.

The guard starts no repair run: a blocker pod needs a person, and a pool whose autoscaling min drifted
above 0 is drift, which the drift sensor repairs (or reports) as it does any other.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field, replace
from typing import Callable

from dagster import (
    AssetCheckKey,
    AssetKey,
    AssetObservation,
    DefaultSensorStatus,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from resources import GpuplatResource
from resources.errors import GpuplatError
from resources.memo import Answers, release
from substrate import history
from substrate.alerts import Alert, deliver, read_url_with
from substrate.config import EnvConfig
from substrate.gpu_pool import PIECE as GPU_POOL
from substrate.jobs import substrate_job
from substrate.prices import Cost, cluster_cost, node_price
from substrate.scale_to_zero import (
    CHECK_NAME,
    Diagnosis,
    applies_to,
    diagnose,
    metadata,
    observe_scale_to_zero,
    summary,
)

from .tick import (NOT_MATERIALIZED, WORKERS, Pace, env_run, fleet, report_run, seconds_from_env, start_sandbox_once,
                   tick_projects)

DEFAULT_INTERVAL_S = 60
INTERVAL_VAR = "GPUPLAT_GUARD_INTERVAL_S"
TRIGGER = "scale-to-zero-guard"

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


def observe_guard_env(resource: GpuplatResource, env: EnvConfig, materialized: set[str], previous: dict[str, float],
                      now: float | None, answers: Answers | None = None) -> GuardReport:
    """One environment: the pool's autoscaling, its nodes and pods, since when each node is idle."""
    name = env.name
    if not applies_to(env):
        return GuardReport(name, skipped="no scale-to-zero GPU pool")
    if name not in materialized:
        return GuardReport(name, skipped=f"gpu_pool {NOT_MATERIALIZED}")
    run = env_run(resource, env, _log, answers)
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
    except GpuplatError as exc:  # one environment's outside world must not stop the others
        return GuardReport(name, error=f"cannot observe the GPU pool: {exc.line()}", remediation=env.remediation,
                           idle_since=dict(previous))
    finally:
        release(run.conn)  # this cluster's answers are not needed for the rest of the tick
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


def guard_run_key(env: str, what: str, nodes: dict[str, float]) -> str:
    return f"{env}:gpu_pool:scale-to-zero:{what}:" + ",".join(f"{n}@{int(t)}" for n, t in sorted(nodes.items()))


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def evaluate_guard(reports: list[GuardReport], cursor: GuardCursor) -> tuple[list[RunRequest], list, list[str]]:
    """Pure: this tick's reports and the cursor -> report runs, observations, notes for the skip reason."""
    runs: list[RunRequest] = []
    events: list = []
    notes: list[str] = []
    key = AssetKey(GPU_POOL.name)
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
            meta["idle_since"] = ", ".join(f"{n}: {_iso(t)}" for n, t in sorted(stuck.items()))
            rk = guard_run_key(r.name, "stuck", new)
            meta["run_key"] = rk
            runs.append(report_run(r.name, [AssetCheckKey(key, CHECK_NAME)], rk, TRIGGER, summary(d)))
            events.append(AssetObservation(asset_key=key, partition=r.name,
                                           description=f"{CHECK_NAME}: " + summary(d)[:900], metadata=meta))
            cursor.reported[r.name] = stuck
        elif reported and not stuck:
            rk = guard_run_key(r.name, "cleared", reported)
            runs.append(report_run(r.name, [AssetCheckKey(key, CHECK_NAME)], rk, TRIGGER, "no GPU node stuck"))
            events.append(AssetObservation(
                asset_key=key, partition=r.name,
                description=f"{', '.join(sorted(reported))} no longer idle past the grace period: " + summary(d)[:800],
                metadata={"run_key": rk}))
            cursor.reported.pop(r.name, None)
        else:
            notes.append(f"{r.name}: {summary(d)}" + (" (already reported)" if stuck else ""))
    notes += running_costs(reports)
    live = {r.name for r in reports}
    for table in (cursor.idle, cursor.reported):
        for env in [e for e in table if e not in live]:
            del table[env]
    return runs, events, notes


def alerts_of_guard(reports: list[GuardReport]) -> list[Alert]:
    """A GPU node idle past its grace period, with its blockers and what it costs per hour: one alert per
    stuck episode (the nodes and since when), sent again only after the environment's quiet period."""
    out = []
    for r in reports:
        d = r.diagnosis
        if d is None or not d.stuck:
            continue
        stuck = {n: r.idle_since.get(n, 0.0) for n in d.stuck}
        out.append(Alert(r.name, guard_run_key(r.name, "stuck", stuck), "idle-gpu",
                         f"GPU node(s) idle past the grace period, still billed: {', '.join(sorted(stuck))}",
                         summary(d)))
    return out


def running_costs(reports: list[GuardReport]) -> list[str]:
    """What the watched environments cost now, summed per currency, each named."""
    by_currency: dict[str, list[tuple[str, float]]] = {}
    for r in reports:
        if isinstance(r.cost, Cost):
            by_currency.setdefault(r.cost.currency, []).append((r.name, r.cost.per_hour))
    return [f"running now: {sum(v for _, v in parts):.2f} {currency}/h across {len(parts)} environment(s) ("
            + ", ".join(f"{n} {v:.2f}" for n, v in parts) + ")" for currency, parts in sorted(by_currency.items())]


def build_scale_to_zero_sensor(name: str = "scale_to_zero_guard", minimum_interval_seconds: int | None = None,
                               clock: Callable[[], float] | None = None, workers: int = WORKERS,
                               default_status: DefaultSensorStatus = DefaultSensorStatus.RUNNING):
    """The guard over the environments under GPUPLAT_ENVIRONMENTS; `clock` (default: each environment's
    cluster clock, the sandbox's simulated one on the sandbox) is injectable for tests."""
    pace = Pace(workers)  # kept from tick to tick: the code server keeps the sensor

    @sensor(name=name, jobs=[substrate_job], default_status=default_status,
            minimum_interval_seconds=minimum_interval_seconds or seconds_from_env(INTERVAL_VAR, DEFAULT_INTERVAL_S),
            description="A GPU node idle past the grace period fails gpu_pool's scales_to_zero check with every "
                        "blocker pod named and the idle cost; the check turns green when the pool reaches zero.")
    def _guard(context: SensorEvaluationContext, gpuplat: GpuplatResource):
        now_fleet = fleet(context.instance)
        names = [n for n in now_fleet.names if n in now_fleet.found.configs]
        materialized = set(history.latest(context.instance, GPU_POOL.name))
        start_sandbox_once(gpuplat, [now_fleet.found.configs[n] for n in names])
        cursor = GuardCursor.load(context.cursor)
        now = clock() if clock else None
        answers = Answers(listing=tick_projects(now_fleet.found.configs[n] for n in names))

        def observe(n: str) -> GuardReport:
            return observe_guard_env(gpuplat, now_fleet.found.configs[n], materialized, cursor.idle.get(n, {}), now,
                                     answers)

        reports = pace.map(observe, names, "gpuplat-guard")
        runs, events, notes = evaluate_guard(reports, cursor)
        sent = deliver(context.instance, now_fleet.found.configs, alerts_of_guard(reports), now or time.time(),
                       read_url_with(lambda env: env_run(gpuplat, env, _log).conn), context.log)
        if sent["sent"] or sent["failed"]:
            notes.append(f"alerts: {sent['sent']} sent, {sent['failed']} not delivered (retried next tick)")
        for r in reports:
            if r.error:
                context.log.warning(f"scale-to-zero guard: {r.name}: {r.error}")
        if runs or events:
            return SensorResult(run_requests=runs, asset_events=events, cursor=cursor.dump())
        text = "no GPU node idle past its grace period" + (": " + "; ".join(notes) if notes else "")
        return SensorResult(skip_reason=SkipReason(text[:2000]), cursor=cursor.dump())

    return _guard


scale_to_zero_guard = build_scale_to_zero_sensor()
