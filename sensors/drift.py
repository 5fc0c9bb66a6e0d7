"""The drift sensor: every tick, the read-only observe + plan of every piece in every environment.

Level-based (kopf's argument, https://kopf.readthedocs.io/en/stable/reconciliation/): each tick
re-observes the live state instead of waiting for config changes, so a change made behind gpuplat's
back (a console click, a `kubectl edit`) is seen within one interval. A piece whose plan is not empty
is one of two things, told apart by the desired state its last materialization applied (its
`desired_fingerprint`):

- **drift**: the config is what was applied and the live state moved away from it. With
  `remediation: auto` (the default except on `profile: prod`) a run of that asset repairs it.
- **a pending change**: the config moved since the last materialization, perhaps half-way through an
  edit. It is shown, with its plan, and applied only by a materialization someone starts, unless the
  environment opts in (`substrate.apply_config_changes: true`, for a deployment that reads a fork at a
  pinned revision).

A sensor never starts a run that cannot succeed: a plan that needs approval, deletes (a pause), or
holds a cannot-fix action is reported, and so is everything with `remediation: report`. A report is an
`AssetObservation` (the trail: what, since when, the exact command) and a checks-only run of the
asset's `in_sync` check for that environment, which fails with the plan; when the finding clears,
one more such run turns the check green. Both can be stored any number of times (Dagster 1.13 cannot
store a partitioned check result outside a run twice: it fails the tick, and every tick after it).

What is not looked at: an environment that is not a partition yet (the environments sensor adds it),
an asset never materialized for it (bringing an environment up is a person's decision), a piece that
rests while its environment is paused, a piece whose prerequisite is missing. An environment whose
cloud or cluster cannot be read is reported once per distinct error, and the others go on.

The cursor holds only what prevents repeats: per (environment, asset) the open finding (kind, plan
hash, first seen, how it was handled), and the hash of the last reported error. The run key is
`<env>:<asset>:<kind>:<plan hash>:<first seen>`: Dagster never launches a run key twice, so one
finding is one run, and the same drift back a week later is a new one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

from dagster import (
    AssetCheckKey,
    AssetKey,
    AssetObservation,
    DagsterRunStatus,
    DefaultSensorStatus,
    MetadataValue,
    RunRequest,
    RunsFilter,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from resources import GpuplatResource
from resources.errors import GpuplatError, PrerequisiteMissing
from resources.memo import Answers, release
from resources.models import KubeIdentity
from substrate import history
from substrate.alerts import Alert, deliver, read_url_with
from substrate.approval import SENSOR_TAG, command, needs_person, person_for
from substrate.config import EnvConfig
from substrate.jobs import SUBSTRATE_JOB, substrate_job
from substrate.piece import Piece
from substrate.pieces import PIECES
from substrate.plan import Action, desired_fingerprint, plan_hash, plan_table

from .tick import (NOT_MATERIALIZED, WORKERS, Pace, env_run, fleet, freeze_long_lived, load_cursor, report_run,
                   seconds_from_env, start_sandbox_once, tick_projects)

INTERVAL_VAR = "GPUPLAT_DRIFT_INTERVAL_S"
DEFAULT_INTERVAL_S = 60
TRIGGER = "drift-sensor"
PLAN_HASH_TAG = "gpuplat/plan-hash"

_log = logging.getLogger("gpuplat.sensors.drift")


def interval_from_env() -> int:
    return seconds_from_env(INTERVAL_VAR, DEFAULT_INTERVAL_S)


# ---- one environment ---------------------------------------------------------------------------------
@dataclass
class Finding:
    asset: str
    state: str  # in_sync | drift | change | skipped | error
    actions: list[Action] = field(default_factory=list)
    reason: str = ""

    @property
    def plan_hash(self) -> str:
        return plan_hash(self.actions)


@dataclass
class EnvReport:
    name: str
    remediation: str = "auto"
    apply_config_changes: bool = False
    error: str = ""  # the environment as a whole could not be read (config)
    findings: list[Finding] = field(default_factory=list)
    seconds: float = 0.0


def observe_env(resource: GpuplatResource, env: EnvConfig, applied: dict[str, dict[str, history.Applied]],
                pieces: Iterable[Piece] = PIECES, answers: Answers | None = None,
                identity: KubeIdentity | None = None, memory: history.Recollections | None = None) -> EnvReport:
    """Observe and plan every piece of one environment. Never raises for the outside world's errors.

    `applied`: per asset, the latest materialization per environment (what it applied)."""
    start = time.monotonic()
    run = env_run(resource, env, _log, answers, identity, memory)
    report = EnvReport(env.name, env.remediation, env.substrate.apply_config_changes)
    try:
        for piece in pieces:
            steps = piece.variant(env)
            if steps.rests:
                continue  # nothing of it is kept while paused: not drift, never rebuilt
            last = applied.get(piece.name, {}).get(env.name)
            if last is None:
                report.findings.append(Finding(piece.name, "skipped", reason=NOT_MATERIALIZED))
                continue
            try:
                spec = steps.desired(env)
                actions = steps.plan(spec, steps.observe(run, spec))
            except PrerequisiteMissing as exc:
                # Its prerequisite is missing (the cluster was not brought up here yet): not drift.
                report.findings.append(Finding(piece.name, "skipped", reason=f"{NOT_MATERIALIZED}: {exc}"))
                continue
            except GpuplatError as exc:  # one environment's outside world must not stop the fleet's tick
                report.findings.append(Finding(piece.name, "error", reason=f"cannot observe: {exc.line()}"))
                continue
            except Exception as exc:  # a bug: its traceback to the log, and the other environments still get their tick
                _log.exception(f"[{env.name}] observing {piece.name} raised {type(exc).__name__}")
                report.findings.append(Finding(piece.name, "error", reason=f"unexpected {type(exc).__name__}: {exc}"))
                continue
            if not actions:
                report.findings.append(Finding(piece.name, "in_sync"))
            else:
                moved = last.desired != desired_fingerprint(spec)
                report.findings.append(Finding(piece.name, "change" if moved else "drift", actions))
    finally:
        release(run.conn)  # this cluster's answers are not needed for the rest of the tick
    report.seconds = time.monotonic() - start
    return report


# ---- the cursor ---------------------------------------------------------------------------------------
@dataclass
class DriftCursor:
    findings: dict[str, dict] = field(default_factory=dict)  # "env|asset" -> {kind, hash, since, mode}
    errors: dict[str, str] = field(default_factory=dict)  # "env|asset" -> error hash

    @classmethod
    def load(cls, raw: str | None) -> "DriftCursor":
        data = load_cursor(raw)
        return cls(dict(data.get("findings") or {}), dict(data.get("errors") or {}))

    def dump(self) -> str:
        return json.dumps({"findings": self.findings, "errors": self.errors}, sort_keys=True, separators=(",", ":"))

    def forget_envs(self, keep: set[str]) -> None:
        for table in (self.findings, self.errors):
            for key in [k for k in table if k.split("|", 1)[0] not in keep]:
                del table[key]


def _key(env: str, asset: str) -> str:
    return f"{env}|{asset}"


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def run_key(env: str, asset: str, kind: str, hash_: str, since: float) -> str:
    # Milliseconds: the same drift made again within the second its repair ended is a new finding, and
    # needs a key Dagster has not seen (in whole seconds it had, and the repair was skipped as a duplicate).
    return f"{env}:{asset}:{kind}:{hash_}:{int(since * 1000)}"


def in_sync_key(asset: str) -> AssetCheckKey:
    return AssetCheckKey(AssetKey(asset), "in_sync")


def check_keys(piece: Piece) -> list[AssetCheckKey]:
    return [AssetCheckKey(AssetKey(piece.name), name) for name in piece.check_names()]


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


WHY_REPORTED = {
    "destroy": "paused: deleting needs the destroy approval, which a sensor run never has",
    "approval": "it needs approval (it costs money), which a sensor run never has",
    "cannot-fix": "it needs a person: a run could not change it",
}


def why_reported(report: EnvReport, f: Finding) -> str:
    """Why a run would not do: "" when a repair run can succeed."""
    person = person_for(f.actions)
    if person:
        return WHY_REPORTED[person]
    if f.state == "change" and not report.apply_config_changes:
        return "the config changed since the last materialization: a pending change is applied by a " \
               "materialization someone starts (or set substrate.apply_config_changes: true)"
    if report.remediation == "report":
        return "remediation: report"
    return ""


def _finding_events(tick: Tick, cursor: DriftCursor, report: EnvReport, f: Finding, now: float,
                    pieces: dict[str, Piece], repairs: dict[str, Repair]) -> None:
    key = _key(report.name, f.asset)
    h = f.plan_hash
    prev = cursor.findings.get(key)
    came_back = False
    if prev and prev.get("hash") == h and prev.get("kind") == f.state:
        rk = run_key(report.name, f.asset, f.state, h, prev.get("since", now))
        repair = repairs.get(rk) if prev.get("mode") == "run" else None
        if repair is not None and repair.status != "SUCCESS":
            _repair_did_not_hold(tick, prev, report, f, rk, repair.run_id, f"its repair run {repair.run_id} failed", now)
            return
        if repair is None or repair.ended is None or repair.ended >= now:
            tick.count(f"known {f.state} ({prev.get('mode')})")
            return
        # Its repair run succeeded and ended before this tick looked, and the same drift is here: made again
        # (by hand, after the run had applied that piece), or beyond what a run changes. Once, it is a new
        # drift with a new run; twice in a row, a person must look.
        if prev.get("came_back"):
            _repair_did_not_hold(tick, prev, report, f, rk, repair.run_id,
                                 f"it came back after its repair run {repair.run_id} succeeded, twice", now)
            return
        came_back = True
    why = why_reported(report, f)
    mode = "report" if why else "run"
    cursor.findings[key] = {"kind": f.state, "hash": h, "since": now, "mode": mode}
    if came_back:
        cursor.findings[key]["came_back"] = True
    rk = run_key(report.name, f.asset, f.state, h, now)
    what = "drift" if f.state == "drift" else "pending change"
    meta = {"plan": MetadataValue.md(plan_table(f.actions)), "plan_hash": h, "kind": what, "first_seen": _iso(now),
            "remediation": report.remediation, "run_key": rk,
            "action": "repair run requested" if mode == "run" else f"reported: {why}"}
    if needs_person(f.actions) or f.state == "change":
        meta["apply_with"] = command(f.asset, report.name, destroy=person_for(f.actions) == "destroy")
    if mode == "run":
        tick.run_requests.append(RunRequest(
            run_key=rk, job_name=SUBSTRATE_JOB, partition_key=report.name, asset_selection=[AssetKey(f.asset)],
            asset_check_keys=check_keys(pieces[f.asset]), tags={SENSOR_TAG: TRIGGER, PLAN_HASH_TAG: h}))
        tick.count(f"new {f.state} (run requested)")
    else:
        tick.run_requests.append(report_run(report.name, [in_sync_key(f.asset)], rk, TRIGGER, f"{what}: {why}"))
        tick.count(f"new {f.state} (reported)")
    tick.events.append(AssetObservation(asset_key=AssetKey(f.asset), partition=report.name,
                                        description=f"{what}: {len(f.actions)} difference(s) from the config",
                                        metadata=meta))


def _repair_did_not_hold(tick: Tick, prev: dict, report: EnvReport, f: Finding, rk: str, run_id: str, cause: str,
                         now: float) -> None:
    """The repair run of an open drift failed (an error, a kill, a daemon restart under it), or the drift
    came back twice after repairs that succeeded: a run key is never launched twice, so without this the
    drift would stay, unrepaired and unsaid. It is reported instead, as drift a run cannot fix, until it
    clears."""
    prev["mode"] = "report"
    prev["repair_did_not_hold"] = cause  # what the alert says: a run that failed, or a drift that came back
    tick.count(f"{f.state} its repair run did not fix (reported)")
    why = f"{cause}: a person looks at that run, then materializes {f.asset}"
    tick.run_requests.append(report_run(report.name, [in_sync_key(f.asset)], f"{rk}:repair-failed", TRIGGER, why))
    tick.events.append(AssetObservation(
        asset_key=AssetKey(f.asset), partition=report.name,
        description=f"drift not repaired: {why}"[:500],
        metadata={"plan": MetadataValue.md(plan_table(f.actions)), "plan_hash": f.plan_hash, "kind": "drift",
                  "first_seen": _iso(prev.get("since", now)), "run_key": rk, "failed_run": run_id,
                  "action": f"reported: {why}",
                  "apply_with": command(f.asset, report.name, destroy=person_for(f.actions) == "destroy")}))


def _in_sync_events(tick: Tick, cursor: DriftCursor, report: EnvReport, f: Finding, now: float) -> None:
    tick.count("in sync")
    key = _key(report.name, f.asset)
    prev = cursor.findings.pop(key, None)
    cursor.errors.pop(key, None)
    if prev and prev.get("mode") == "report":
        # The failed check this sensor's report left would otherwise stand until the next scheduled check.
        rk = f"{report.name}:{f.asset}:cleared:{prev.get('hash')}:{int(now)}"
        tick.run_requests.append(report_run(report.name, [in_sync_key(f.asset)], rk, TRIGGER, "in sync again"))
        tick.events.append(AssetObservation(
            asset_key=AssetKey(f.asset), partition=report.name,
            description=f"in sync again ({prev.get('kind')} first seen {_iso(prev.get('since', now))} is gone)",
            metadata={"resolved": _iso(now), "run_key": rk}))


def _error_events(tick: Tick, cursor: DriftCursor, env: str, asset: str, text: str, now: float) -> None:
    tick.count("error")
    key = _key(env, asset)
    h = _short_hash(text)
    tick.notes.append(f"{env}/{asset}: {text}")
    if cursor.errors.get(key) == h:
        return
    cursor.errors[key] = h
    tick.events.append(AssetObservation(asset_key=AssetKey(asset), partition=env,
                                        description=f"the drift sensor could not observe {asset}: {text}"[:500],
                                        metadata={"error": text, "first_seen": _iso(now)}))


def evaluate(reports: list[EnvReport], cursor: DriftCursor, now: float, pieces: Iterable[Piece] = PIECES,
             repairs: dict[str, Repair] | None = None) -> Tick:
    """Pure: turn this tick's reports and the cursor into run requests, events and the next cursor.
    `repairs`: run key -> how this sensor's repair runs of open drifts ended (`finished_repairs`)."""
    by_name = {p.name: p for p in pieces}
    tick = Tick()
    for report in reports:
        for f in report.findings:
            if f.state in ("drift", "change"):
                cursor.errors.pop(_key(report.name, f.asset), None)
                _finding_events(tick, cursor, report, f, now, by_name, repairs or {})
            elif f.state == "in_sync":
                _in_sync_events(tick, cursor, report, f, now)
            elif f.state == "error":
                _error_events(tick, cursor, report.name, f.asset, f.reason, now)
            else:
                tick.count(f.reason.split(":", 1)[0])
    return tick


@dataclass(frozen=True)
class Repair:
    """How the repair run of an open drift ended."""
    run_id: str
    status: str  # a DagsterRunStatus value: SUCCESS, FAILURE or CANCELED
    ended: float | None  # when, seconds since the epoch


def finished_repairs(instance, cursor: DriftCursor) -> dict[str, Repair]:
    """Run key -> how it ended, for each open drift's repair run that has ended (one query per open drift
    a run was requested for: a handful, whatever the fleet)."""
    out = {}
    for key, prev in cursor.findings.items():
        if prev.get("mode") != "run":
            continue
        env, asset = key.split("|", 1)
        rk = run_key(env, asset, prev.get("kind", ""), prev.get("hash", ""), prev.get("since", 0))
        records = instance.get_run_records(RunsFilter(tags={"dagster/run_key": rk}), limit=1)
        if records and records[0].dagster_run.status in (DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE,
                                                          DagsterRunStatus.CANCELED):
            out[rk] = Repair(records[0].dagster_run.run_id, records[0].dagster_run.status.value, records[0].end_time)
    return out


def alerts_of(reports: list[EnvReport], cursor: DriftCursor) -> list[Alert]:
    """The open findings a person must hear about (substrate/alerts.py sends each once per quiet period):
    reported drift, a change waiting for approval, a difference no run can fix. A pending config change
    someone is making, and drift a run repairs, are not sent."""
    out = []
    for report in reports:
        for f in report.findings:
            open_ = cursor.findings.get(_key(report.name, f.asset))
            if f.state not in ("drift", "change") or not open_ or open_.get("mode") != "report":
                continue
            person = person_for(f.actions)
            if person in ("destroy", "approval"):
                kind, title = "approval", f"{f.asset} waits for approval"
            elif person == "cannot-fix":
                kind, title = "cannot-fix", f"{f.asset} needs a person: a run cannot change it"
            elif f.state == "drift" and open_.get("repair_did_not_hold"):
                kind, title = "drift", f"drift in {f.asset}: {open_['repair_did_not_hold']}"
            elif f.state == "drift":
                kind, title = "drift", f"drift in {f.asset} (remediation: report)"
            else:
                continue
            out.append(Alert(report.name, run_key(report.name, f.asset, f.state, f.plan_hash, open_.get("since", 0)),
                             kind, title, f"{len(f.actions)} difference(s): " + "; ".join(a.summary() for a in f.actions),
                             command(f.asset, report.name, destroy=person == "destroy") if kind == "approval" else ""))
    return out


def skip_reason(tick: Tick, n_envs: int, skipped_envs: list[str]) -> str:
    counts = ", ".join(f"{n} {what}" for what, n in sorted(tick.counts.items()))
    text = f"no new drift or change in {n_envs} environment(s)" + (f" ({counts})" if counts else "")
    if skipped_envs:
        text += "; not observed: " + "; ".join(skipped_envs)
    if tick.notes:
        text += "; errors: " + "; ".join(tick.notes)
    return text[:2000]


def build_drift_sensor(name: str = "drift_sensor", minimum_interval_seconds: int | None = None,
                       clock: Callable[[], float] = time.time, workers: int | None = None,
                       default_status: DefaultSensorStatus = DefaultSensorStatus.RUNNING):
    """The drift sensor over the environments under GPUPLAT_ENVIRONMENTS."""
    pace = Pace(workers or WORKERS)  # kept from tick to tick: the code server keeps the sensor

    @sensor(name=name, jobs=[substrate_job], default_status=default_status,
            minimum_interval_seconds=minimum_interval_seconds or interval_from_env(),
            description="Every tick: the read-only plan of every asset in every environment. Drift is repaired by a "
                        "run (remediation auto) or reported; a pending config change, or anything that needs "
                        "approval or a person, is reported as a failing in_sync check with the command to apply it.")
    def _drift_sensor(context: SensorEvaluationContext, gpuplat: GpuplatResource):
        started = time.monotonic()
        now_fleet = fleet(context.instance)
        names = [n for n in now_fleet.names if n in now_fleet.found.configs]
        skipped = [f"{n} (config error: the environments sensor reports it)" for n in now_fleet.names
                   if n in now_fleet.found.errors]
        skipped += [f"{n} (not a partition yet)" for n in now_fleet.unknown()]
        applied = {p.name: history.latest(context.instance, p.name) for p in PIECES}
        configs = [now_fleet.found.configs[n] for n in names]
        start_sandbox_once(gpuplat, configs)
        now = clock()
        answers = Answers(listing=tick_projects(configs))  # this tick's: nothing is remembered into the next one
        clusters = applied.get(history.CLUSTER, {})
        memory = history.Recollections(context.instance, names)

        def observe(n: str) -> EnvReport:
            env = now_fleet.found.configs[n]
            identity = None if env.is_gke else clusters.get(n, history.Applied(0)).identity
            return observe_env(gpuplat, env, applied, answers=answers, identity=identity, memory=memory)

        reports = pace.map(observe, names, "gpuplat-drift")
        cursor = DriftCursor.load(context.cursor)
        cursor.forget_envs(set(names))
        tick = evaluate(reports, cursor, now, repairs=finished_repairs(context.instance, cursor))
        sent = deliver(context.instance, now_fleet.found.configs, alerts_of(reports, cursor), now,
                       read_url_with(lambda env: env_run(gpuplat, env, _log).conn), context.log)
        for what, n in (("alert(s) sent", sent["sent"]), ("alert(s) not delivered (retried next tick)", sent["failed"])):
            if n:
                tick.counts[what] = n
        for note in tick.notes:
            context.log.warning(f"drift sensor: {note}")
        if freeze_long_lived(len(names)):
            context.log.info(f"a fleet of {len(names)} environments: the objects kept between ticks are frozen out of "
                             f"the garbage collector's full collections (once per process)")
        slowest = max(reports, key=lambda r: r.seconds, default=None)
        context.log.info(f"observed {len(reports)} environment(s) in {time.monotonic() - started:.2f}s"
                         + (f" (slowest {slowest.name}: {slowest.seconds:.2f}s)" if slowest else "")
                         + f"; its threads kept {pace.busy:.0%} of a core busy, the next tick uses {pace.workers}")
        if tick.run_requests or tick.events:
            return SensorResult(run_requests=tick.run_requests, asset_events=tick.events, cursor=cursor.dump())
        return SensorResult(skip_reason=SkipReason(skip_reason(tick, len(names), skipped)), cursor=cursor.dump())

    return _drift_sensor


drift_sensor = build_drift_sensor()
