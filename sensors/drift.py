"""The drift sensor: every tick, the read-only observe + plan of every piece in every environment.

Level-based (kopf's argument, https://kopf.readthedocs.io/en/stable/reconciliation/): each tick
re-observes the live state instead of waiting for config changes, so a change made behind
gpuplat's back (a console click, a `kubectl edit`) is seen within one interval. Per environment and
piece, a non-empty plan is one *drift episode*, identified by the plan's hash:

- `remediation: auto` (the default except on `profile: prod`): one run of that asset for that
  partition, tagged `gpuplat/trigger=drift-sensor` (such runs never apply what needs approval: they
  fail with the plan), plus an `AssetObservation` recording the plan and when it was first seen.
- `remediation: report`: no run; the observation and a failed `in_sync` check evaluation with the
  plan. When the drift goes away a passing evaluation clears it.
- a plan with nothing a run could do (only `cannot-fix` actions, which need a human) is reported
  the same way, whatever the remediation.

What is not drift: an asset partition that was never materialized (bringing an environment up is a
person's decision, not the sensor's), and a piece whose prerequisite is missing (no kubeconfig yet).
An environment whose config is broken, or whose cloud or cluster cannot be reached, is reported (an
observation on the affected assets, once per distinct error, and a log line every tick) and the
other environments go on.

The cursor holds only what prevents repeats: per (environment, asset) the hash and first-seen time
of the open drift episode, and the hash of the last reported error. The run key is
`<env>:<asset>:<plan hash>:<first seen>`: Dagster never launches a run key twice, so the first-seen
part lets the same drift, fixed and come back a week later, start a new run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from dagster import (
    AssetCheckEvaluation,
    AssetCheckKey,
    AssetCheckSeverity,
    AssetKey,
    AssetObservation,
    AssetSelection,
    DefaultSensorStatus,
    MetadataValue,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from gpuplat_assets.assets import PARTITIONS, PIECES, SENSOR_TAG, recorded_identity
from gpuplat_assets.config import ConfigError, EnvConfig, environments_dir, load_environment, load_environments
from gpuplat_assets.piece import Piece, Run, rests, target_of
from gpuplat_assets.plan import Action, mutating, plan_hash, plan_table
from resources import GpuplatResource
from resources.errors import describe
from resources.kube import KubeconfigMissing
from resources.models import KubeIdentity
from resources.memo import Answers, memoize

INTERVAL_VAR = "GPUPLAT_DRIFT_INTERVAL_S"
DEFAULT_INTERVAL_S = 60
TRIGGER = "drift-sensor"
PLAN_HASH_TAG = "gpuplat/plan-hash"
# Environments are observed side by side: each waits mostly on its APIs, not on this process.
WORKERS = 8
NOT_MATERIALIZED = "not yet materialized"
TICK_RETRY_DEADLINE_S = 20.0

_log = logging.getLogger("gpuplat.sensors.drift")


def interval_from_env() -> int:
    raw = os.environ.get(INTERVAL_VAR, "")
    try:
        return max(1, int(raw)) if raw else DEFAULT_INTERVAL_S
    except ValueError:
        return DEFAULT_INTERVAL_S


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


def env_run(resource: GpuplatResource, name: str, root: Path | None = None, log: Any = None,
            answers: Answers | None = None, env: EnvConfig | None = None, identity: KubeIdentity | None = None) -> Run:
    """A read-only `Run` for one environment outside any op: fresh config, memoized clients, no approval.

    `answers` is the tick's: environments of one GCP project (or one kubeconfig) share their reads.
    `env`, when the tick already read the config, saves reading it again.
    """
    env = env or load_environment(name, root)
    # Transient errors are retried for a while, but not past the tick: Dagster gives a sensor 60 s.
    conn = memoize(resource.connect(target_of(env, identity), retry_deadline=TICK_RETRY_DEADLINE_S), answers)
    return Run(env, conn, log or QuietLog(_log, name), approved=False)


def start_sandbox_once(resource: GpuplatResource, envs: list) -> None:
    """Start the on-demand sandbox here, before the environments are observed side by side: each
    thread would otherwise find it down and start its own, all racing for the same fixed ports."""
    env = next((e for e in envs if e.substrate.sandbox), None)
    if env is not None:
        resource.connect(target_of(env)).sandbox_urls  # noqa: B018 - starts it when it is not running


# ---- one environment ---------------------------------------------------------------------------------
@dataclass
class Finding:
    asset: str
    state: str  # in_sync | drift | skipped | error
    actions: list[Action] = field(default_factory=list)
    reason: str = ""

    @property
    def plan_hash(self) -> str:
        return plan_hash(self.actions)


@dataclass
class EnvReport:
    name: str
    remediation: str = "auto"
    error: str = ""  # the environment as a whole could not be read (config)
    findings: list[Finding] = field(default_factory=list)
    seconds: float = 0.0


def observe_env(resource: GpuplatResource, name: str, root: Path | None, materialized: dict[str, set[str]],
                pieces: Iterable[Piece] = PIECES, answers: Answers | None = None,
                env: EnvConfig | None = None, identity: KubeIdentity | None = None) -> EnvReport:
    """Observe and plan every piece of one environment. Never raises for the outside world's errors."""
    start = time.monotonic()
    try:
        run = env_run(resource, name, root, answers=answers, env=env, identity=identity)
    except ConfigError as exc:
        return EnvReport(name, error=str(exc), seconds=time.monotonic() - start)
    report = EnvReport(name, run.env.remediation)
    for piece in pieces:
        if rests(piece, run.env):
            continue  # nothing of it is kept while paused: not drift, never rebuilt
        if name not in materialized.get(piece.name, set()):
            report.findings.append(Finding(piece.name, "skipped", reason=NOT_MATERIALIZED))
            continue
        try:
            spec = piece.desired(run.env)
            actions = piece.plan(spec, piece.observe(run, spec))
        except KubeconfigMissing as exc:
            # Its prerequisite is missing (the cluster was not brought up here yet): not drift.
            report.findings.append(Finding(piece.name, "skipped", reason=f"{NOT_MATERIALIZED}: {exc}"))
            continue
        except Exception as exc:  # one environment's outside world must not stop the fleet's tick
            text = describe(exc)
            if text is None:
                # Not a known API error: most likely a bug, so its traceback goes to the log; the
                # other environments still get their tick.
                _log.exception(f"[{name}] observing {piece.name} raised {type(exc).__name__}")
                text = f"unexpected {type(exc).__name__}: {exc}"
            report.findings.append(Finding(piece.name, "error", reason=f"cannot observe: {text}"))
            continue
        report.findings.append(Finding(piece.name, "drift" if actions else "in_sync", actions))
    report.seconds = time.monotonic() - start
    return report


# ---- the cursor ---------------------------------------------------------------------------------------
@dataclass
class DriftCursor:
    drift: dict[str, dict] = field(default_factory=dict)  # "env|asset" -> {hash, since, mode}
    errors: dict[str, str] = field(default_factory=dict)  # "env|asset" (or "env|*") -> error hash

    @classmethod
    def load(cls, raw: str | None) -> "DriftCursor":
        try:
            data = json.loads(raw) if raw else {}
        except ValueError:
            data = {}
        return cls(dict(data.get("drift") or {}), dict(data.get("errors") or {}))

    def dump(self) -> str:
        return json.dumps({"drift": self.drift, "errors": self.errors}, sort_keys=True, separators=(",", ":"))

    def forget_envs(self, keep: set[str]) -> None:
        for table in (self.drift, self.errors):
            for key in [k for k in table if k.split("|", 1)[0] not in keep]:
                del table[key]


def _key(env: str, asset: str) -> str:
    return f"{env}|{asset}"


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def run_key(env: str, asset: str, hash_: str, since: float) -> str:
    return f"{env}:{asset}:{hash_}:{int(since)}"


def check_keys(piece: Piece) -> list[AssetCheckKey]:
    return [AssetCheckKey(AssetKey(piece.name), name) for name in ("in_sync", *(c.name for c in piece.checks))]


# ---- the tick -----------------------------------------------------------------------------------------
@dataclass
class Tick:
    run_requests: list[RunRequest] = field(default_factory=list)
    events: list = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def count(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def _drift_events(tick: Tick, cursor: DriftCursor, report: EnvReport, f: Finding, now: float,
                  pieces: dict[str, Piece]) -> None:
    key = _key(report.name, f.asset)
    h = f.plan_hash
    prev = cursor.drift.get(key)
    if prev and prev.get("hash") == h:
        tick.count(f"known drift ({prev.get('mode')})")
        return
    fixable = bool(mutating(f.actions))
    # A paused environment's leftovers are drift to remove, but only with the destroy approval, which
    # a sensor run never has: reported, never a run.
    destroys = any(a.kind == "delete" for a in f.actions)
    mode = "run" if report.remediation == "auto" and fixable and not destroys else "report"
    since = now
    cursor.drift[key] = {"hash": h, "since": since, "mode": mode}
    why = ("remediation: report" if report.remediation == "report" else
           "paused: deleting needs the destroy approval, which a sensor run never has" if destroys else
           "only cannot-fix actions: a run could change nothing" if not fixable else "")
    meta = {"plan": MetadataValue.md(plan_table(f.actions)), "plan_hash": h, "first_seen": _iso(since),
            "remediation": report.remediation, "action": "run requested" if mode == "run" else f"reported ({why})"}
    if mode == "run":
        rk = run_key(report.name, f.asset, h, since)
        meta["run_key"] = rk
        tick.run_requests.append(RunRequest(
            run_key=rk, partition_key=report.name, asset_selection=[AssetKey(f.asset)],
            asset_check_keys=check_keys(pieces[f.asset]),
            tags={SENSOR_TAG: TRIGGER, PLAN_HASH_TAG: h}))
        tick.count("new drift (run requested)")
    else:
        tick.events.append(AssetCheckEvaluation(
            asset_key=AssetKey(f.asset), check_name="in_sync", passed=False, partition=report.name,
            severity=AssetCheckSeverity.ERROR,
            description=f"drift seen by the drift sensor ({why}): " + "; ".join(a.summary() for a in f.actions),
            metadata={"plan": MetadataValue.md(plan_table(f.actions)), "plan_hash": h, "first_seen": _iso(since)}))
        tick.count("new drift (reported)")
    tick.events.append(AssetObservation(asset_key=AssetKey(f.asset), partition=report.name,
                                        description=f"drift: {len(f.actions)} difference(s) from the config",
                                        metadata=meta))


def _in_sync_events(tick: Tick, cursor: DriftCursor, report: EnvReport, f: Finding, now: float) -> None:
    tick.count("in sync")
    prev = cursor.drift.pop(_key(report.name, f.asset), None)
    cursor.errors.pop(_key(report.name, f.asset), None)
    if prev and prev.get("mode") == "report":
        # The failed evaluation this sensor left would otherwise stand until the next scheduled check.
        tick.events.append(AssetCheckEvaluation(
            asset_key=AssetKey(f.asset), check_name="in_sync", passed=True, partition=report.name,
            description=f"in sync again (drift first seen {_iso(prev.get('since', now))} is gone)",
            metadata={"plan": MetadataValue.md(plan_table([])), "resolved": _iso(now)}))


def _error_events(tick: Tick, cursor: DriftCursor, env: str, assets: list[str], text: str, now: float,
                  key_asset: str) -> None:
    tick.count("error")
    key = _key(env, key_asset)
    h = _short_hash(text)
    tick.notes.append(f"{env}{'' if key_asset == '*' else '/' + key_asset}: {text}")
    if cursor.errors.get(key) == h:
        return
    cursor.errors[key] = h
    for asset in assets:
        tick.events.append(AssetObservation(asset_key=AssetKey(asset), partition=env,
                                            description=f"the drift sensor could not observe {asset}: {text}"[:500],
                                            metadata={"error": text, "first_seen": _iso(now)}))


def evaluate(reports: list[EnvReport], cursor: DriftCursor, now: float, partitions: set[str],
             pieces: Iterable[Piece] = PIECES) -> Tick:
    """Pure: turn this tick's reports and the cursor into run requests, events and the next cursor."""
    by_name = {p.name: p for p in pieces}
    tick = Tick()
    for report in reports:
        if report.error:
            # A broken config: reported once per distinct error on every asset of the partition.
            _error_events(tick, cursor, report.name, list(by_name), report.error, now, "*")
            continue
        cursor.errors.pop(_key(report.name, "*"), None)
        for f in report.findings:
            if f.state == "drift":
                cursor.errors.pop(_key(report.name, f.asset), None)
                _drift_events(tick, cursor, report, f, now, by_name)
            elif f.state == "in_sync":
                _in_sync_events(tick, cursor, report, f, now)
            elif f.state == "error":
                _error_events(tick, cursor, report.name, [f.asset], f.reason, now, f.asset)
            else:
                tick.count(f.reason.split(":", 1)[0])
    return tick


def skip_reason(tick: Tick, n_envs: int, skipped_envs: list[str]) -> str:
    counts = ", ".join(f"{n} {what}" for what, n in sorted(tick.counts.items()))
    text = f"no new drift in {n_envs} environment(s)" + (f" ({counts})" if counts else "")
    if skipped_envs:
        text += "; not observed: " + "; ".join(skipped_envs)
    if tick.notes:
        text += "; errors: " + "; ".join(tick.notes)
    return text[:2000]


def build_drift_sensor(name: str = "drift_sensor", environments_root: Path | None = None,
                       minimum_interval_seconds: int | None = None, clock: Callable[[], float] = time.time,
                       workers: int = WORKERS, default_status: DefaultSensorStatus = DefaultSensorStatus.RUNNING):
    """The drift sensor over the environments under `environments_root` (default: GPUPLAT_ENVIRONMENTS)."""

    @sensor(name=name, target=AssetSelection.all(), default_status=default_status,
            minimum_interval_seconds=minimum_interval_seconds or interval_from_env(),
            description="Every tick: the read-only plan of every asset in every environment; new drift requests one "
                        "run of that asset (remediation auto) or fails its in_sync check (remediation report).")
    def _drift_sensor(context: SensorEvaluationContext, gpuplat: GpuplatResource):
        started = time.monotonic()
        root = environments_root or environments_dir()
        found = load_environments(root)
        partitions = set(PARTITIONS.get_partition_keys())
        names = [n for n in found.names if n in partitions]
        skipped = [f"{n} (not a partition yet: reload the code location)" for n in found.names if n not in partitions]
        for line in skipped:
            context.log.warning(f"environment {line}")
        materialized = {p.name: context.instance.get_materialized_partitions(AssetKey(p.name)) for p in PIECES}
        start_sandbox_once(gpuplat, [found.configs[n] for n in names if n in found.configs])
        now = clock()
        answers = Answers()  # this tick's: nothing is remembered into the next one
        identities = {n: recorded_identity(context.instance, n) for n, cfg in found.configs.items()
                      if n in names and not cfg.is_gke}

        def observe(n: str) -> EnvReport:
            if n in found.errors:
                return EnvReport(n, error=found.errors[n])
            return observe_env(gpuplat, n, root, materialized, answers=answers, env=found.configs[n],
                               identity=identities.get(n))

        if workers <= 1 or len(names) <= 1:
            reports = [observe(n) for n in names]
        else:
            with ThreadPoolExecutor(max_workers=min(workers, len(names)), thread_name_prefix="gpuplat-drift") as pool:
                reports = list(pool.map(observe, names))
        cursor = DriftCursor.load(context.cursor)
        cursor.forget_envs(set(names))
        tick = evaluate(reports, cursor, now, partitions)
        for note in tick.notes:
            context.log.warning(f"drift sensor: {note}")
        slowest = max(reports, key=lambda r: r.seconds, default=None)
        context.log.info(f"observed {len(reports)} environment(s) in {time.monotonic() - started:.2f}s"
                         + (f" (slowest {slowest.name}: {slowest.seconds:.2f}s)" if slowest else ""))
        if tick.run_requests or tick.events:
            return SensorResult(run_requests=tick.run_requests, asset_events=tick.events, cursor=cursor.dump())
        return SensorResult(skip_reason=SkipReason(skip_reason(tick, len(names), skipped)), cursor=cursor.dump())

    return _drift_sensor


drift_sensor = build_drift_sensor()
