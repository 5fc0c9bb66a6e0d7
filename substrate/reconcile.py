"""One piece, one environment, one run: desired -> observe -> plan -> apply, and the checks after it.

`reconcile` is an asset's body and `evaluate_check` a check's (gpuplat_assets/assets.py wires them into
Dagster). Both call only a piece's `Steps` (substrate/piece.py): what runs for the environment as it
is now (running, paused, resting). Known failures of the outside world and of the input are
`GpuplatError`s and end as one line (`dagster.Failure`); anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from dagster import AssetCheckResult, AssetCheckSeverity, AssetKey, DataVersion, Failure, MaterializeResult, MetadataValue

from resources import ADOPT_TAG, GpuplatResource
from resources.errors import GpuplatError

from . import history, lease
from .alerts import Alert, deliver, read_url_with
from .approval import (
    ApprovalNeeded,
    DestroyApprovalNeeded,
    SENSOR_TAG,
    approval_message,
    approval_source,
    command,
    destroy_message,
    destroy_source,
    needs_person,
)
from .config import TRUST_ZONE_VAR, ConfigError
from .environments import load_environment
from .failures import failure
from .history import DESIRED_KEY, recorded_identity
from .pause import PAUSED_CHECK
from .piece import PAUSED, Check, Outcome, Piece, Run, Steps, target_of
from .plan import Action, desired_fingerprint, fingerprint, mutating, plan_table
from .workers import tag_run

ERR_NO_ENVIRONMENT = "no environment chosen"
# Observations made in this process, keyed by run, piece and environment, so the checks that run
# after an asset in the same run reuse its after-apply observation instead of asking again.
_OBSERVED: dict[tuple[str, str, str], tuple[Any, Any]] = {}
# (run, piece, environment) of the assets materialized in this process: their checks can block.
_MATERIALIZED: set[tuple[str, str, str]] = set()
# The desired fingerprint each asset materialized in this process recorded, by (run, piece, environment):
# its in_sync check reads it here rather than asking the instance for the materialization it just made.
_APPLIED: dict[tuple[str, str, str], str] = {}


def require_environment(context) -> str:
    """The run's environment. A run without a partition (the UI's "Execute all" on an asset's checks
    launches one) has none: refused in one line instead of Dagster's "non-partitioned run" internals."""
    if context.has_partition_key:
        return context.partition_key
    raise failure(f"{ERR_NO_ENVIRONMENT}: gpuplat works on one environment at a time; launch the drift_checks job "
                  f"(or materialize) for one environment (the partition)")


def open_run(context, resource: GpuplatResource) -> tuple[Run, dict]:
    name = require_environment(context)
    tags = dict(context.run.tags) if context.run else {}
    try:
        if context.run:  # who runs it, then one run per environment: before the config is read or anything called
            tag_run(context.instance, context.run.run_id, tags)
            lease.acquire(context.instance, context.run.run_id, name, context.log)
        env = load_environment(name)
        refused = env.zone_refusal(os.environ.get(TRUST_ZONE_VAR, ""))
    except ConfigError as exc:
        raise failure(str(exc), {"file": exc.path, "key": exc.key}) from None
    except lease.EnvironmentBusy as exc:
        raise failure(exc.line()) from None
    if refused:
        raise failure(refused, {"file": env.path, "key": "substrate.trust_zone"})
    # A GKE cluster is found by name, never by a recorded identity: not asked for (an instance query per step).
    identity = None if env.is_gke or tags.get(ADOPT_TAG) == "true" else recorded_identity(context.instance, env.name)
    run = Run(env, resource.connect(target_of(env, identity), progress=context.log.info), context.log,
              bool(approval_source(tags, env)))
    run.recall = lambda asset, key: history.recall(context.instance, asset, env.name, key)
    run.remember = lambda asset, key, value: history.remember(context, asset, env.name, key, value,
                                                              f"{key} of {env.name}, recorded by run {context.run.run_id}")
    return run, tags


def reconcile(piece: Piece, context, resource: GpuplatResource) -> MaterializeResult:
    run, tags = open_run(context, resource)
    env = run.env
    steps: Steps = piece.variant(env)
    if steps.rests:
        return MaterializeResult(metadata={"plan": MetadataValue.md(PAUSED), "lifecycle": "paused",
                                           "actions_applied": 0}, data_version=DataVersion("paused"))
    sensor_run = bool(tags.get(SENSOR_TAG))
    try:
        spec = steps.desired(env)
        observed = steps.observe(run, spec)
        actions = steps.plan(spec, observed)
        if any(a.needs_approval for a in actions) and not run.approved:
            raise ApprovalNeeded(approval_message(piece.name, env, actions, sensor_run))
        if any(a.kind == "delete" for a in actions) and not destroy_source(tags):
            raise DestroyApprovalNeeded(destroy_message(piece.name, env, actions, sensor_run))
        context.log.info(f"{piece.name} plan for {env.name}:\n{plan_table(actions)}")
        after = actions
        if mutating(actions):
            steps.apply(run, spec, observed, actions)
            observed = steps.observe(run, spec)
            after = steps.plan(spec, observed)
    except (ApprovalNeeded, DestroyApprovalNeeded) as exc:
        raise failure(str(exc), {"plan": MetadataValue.md(plan_table(actions))}) from None
    except GpuplatError as exc:
        raise failure(f"{piece.name} in {env.name}: {exc.line()}") from None
    _OBSERVED[(context.run.run_id, piece.name, env.name)] = (spec, observed)
    _MATERIALIZED.add((context.run.run_id, piece.name, env.name))
    blocked = [a for a in after if a.kind == "cannot-fix"]
    if blocked:
        raise failure(f"{piece.name} in {env.name} needs a human: " + "; ".join(a.summary() for a in blocked),
                      {"plan": MetadataValue.md(plan_table(actions)), "remaining": MetadataValue.md(plan_table(after))})
    result = MaterializeResult(metadata=_metadata(piece, steps, run, tags, spec, observed, actions),
                               data_version=DataVersion(fingerprint(observed.owned())))
    _APPLIED[(context.run.run_id, piece.name, env.name)] = result.metadata[DESIRED_KEY]
    return result


def _metadata(piece: Piece, steps: Steps, run: Run, tags: dict, spec, observed, actions: list[Action]) -> dict:
    env = run.env
    owned = observed.owned()
    meta: dict[str, Any] = {
        "plan": MetadataValue.md(plan_table(actions)),
        "observed": MetadataValue.json(owned),
        "fingerprint": fingerprint(owned),
        DESIRED_KEY: desired_fingerprint(spec),
        "actions_applied": len(mutating(actions)),
        "owned_fields": ", ".join(piece.owned_fields),
    }
    if any(a.needs_approval for a in actions):
        meta["approval"] = approval_source(tags, env)
    if any(a.kind == "delete" for a in actions):
        meta["destroy_approval"] = destroy_source(tags)
    meta["lifecycle"] = env.lifecycle
    for key, url in steps.links(env, observed).items():
        meta[key] = MetadataValue.url(url)
    for key, value in steps.record(env, observed).items():
        meta[key] = MetadataValue.json(value)
    meta.update(steps.provenance(spec))
    try:
        meta.update(steps.report(run, spec, observed))
    except GpuplatError as exc:  # a price that cannot be read never fails the materialization
        meta["cost_unknown"] = f"cannot price the environment: {exc.line()}"
    kube = run.conn.__dict__.get("kube")  # only when this piece used the cluster: never connect just to say so
    if kube is not None:
        t = kube.target
        meta["kube_target"] = f"{t.context} @ {t.server} ({t.kubeconfig})"
    return meta


def _check_result(piece: Piece, check_name: str, outcome: Outcome, blocks: bool = True) -> AssetCheckResult:
    """`blocks`: the asset was materialized in this run, so a failing blocking check holds back what depends
    on it (ERROR). In a checks-only run (the drift_checks job, a sensor's report) nothing downstream runs:
    the failure is reported at WARN, which Dagster records as failed without failing the run."""
    meta = {k: (MetadataValue.md(v) if k == "plan" else v) for k, v in outcome.metadata.items()
            if v is not None and v != ""}
    return AssetCheckResult(passed=outcome.passed, check_name=check_name, asset_key=AssetKey(piece.name),
                            description=outcome.description, metadata=meta,
                            severity=AssetCheckSeverity.ERROR if blocks else AssetCheckSeverity.WARN)


def cached_or_observe(piece: Piece, context, resource: GpuplatResource) -> tuple[Run, Steps, Any, Any]:
    """The run, the steps that run for the environment, and its desired and observed state: this run's own
    observation when the asset was materialized in it."""
    run, _ = open_run(context, resource)
    steps = piece.variant(run.env)
    hit = _OBSERVED.get((context.run.run_id, piece.name, run.env.name))
    if hit is not None:
        return run, steps, hit[0], hit[1]
    spec = steps.desired(run.env)
    observed = steps.observe(run, spec)
    _OBSERVED[(context.run.run_id, piece.name, run.env.name)] = (spec, observed)
    return run, steps, spec, observed


def in_sync(steps: Steps, spec, observed, piece: Piece, env, applied: str | None) -> Outcome:
    """`terraform plan` for one piece: passes when its plan is empty. A difference is told as a pending change
    when the config moved since the last materialization (`applied`: the desired state it applied), as drift
    otherwise, with the exact command when applying it needs a person."""
    actions = steps.plan(spec, observed)
    meta = {"plan": plan_table(actions),
            "observed": json.dumps(observed.owned(), sort_keys=True)[:2000] if observed is not None else ""}
    if not actions:
        return Outcome(True, "in sync", meta)
    moved = applied is not None and applied != desired_fingerprint(spec)
    what = ("pending change: the config changed since the last materialization" if moved else
            "drift: the live state moved away from what the last materialization applied")
    destroy = any(a.kind == "delete" for a in actions)
    if moved or needs_person(actions):
        meta["apply_with"] = command(piece.name, env.name, destroy=destroy)
        if destroy or any(a.needs_approval for a in actions):
            what += f"; approve and apply with {meta['apply_with']}"
        elif moved:
            what += f"; apply with {meta['apply_with']}"
    return Outcome(False, f"{what}. {len(actions)} difference(s): " + "; ".join(a.summary() for a in actions), meta)


def evaluate_check(piece: Piece, check: Check | None, context, resource: GpuplatResource) -> AssetCheckResult:
    """`check` None: `in_sync`."""
    name = check.name if check else "in_sync"
    env_name = require_environment(context)  # raised, not recorded: a result needs an environment to belong to
    blocks = (context.run.run_id, piece.name, env_name) in _MATERIALIZED
    try:
        run, steps, spec, observed = cached_or_observe(piece, context, resource)
    except Failure as exc:
        return _check_result(piece, name, Outcome(False, exc.description or "config error"), blocks)
    except GpuplatError as exc:
        return _check_result(piece, name, Outcome(False, f"cannot observe: {exc.line()}",
                                                  {"error": exc.message, "remedy": exc.remedy}), blocks)
    if check is None:
        applied = _APPLIED.get((context.run.run_id, piece.name, env_name))
        if applied is None:
            last = history.latest(context.instance, piece.name, {env_name}).get(env_name)
            applied = last.desired if last else None
        outcome = in_sync(steps, spec, observed, piece, run.env, applied)
        outcome.metadata["owned_fields"] = ", ".join(piece.owned_fields)
        return _check_result(piece, name, outcome, blocks)
    outcome = steps.evaluate(check, spec, observed, run.env)
    if name == PAUSED_CHECK and not outcome.passed:
        # A pause that left something billing: the one finding of a run that a person must hear about.
        # One finding per set of leftovers: their names, not their state or price, which move while it lasts.
        left = [line.split(" (", 1)[0] for line in str(outcome.metadata.get("leftovers", "")).splitlines()]
        deliver(context.instance, {env_name: run.env},
                [Alert(env_name, f"{env_name}:pause-billing:{fingerprint(left)}", "pause-billing",
                       "paused, but something is still billed", outcome.description)],
                time.time(), read_url_with(lambda env: run.conn), context.log)
    return _check_result(piece, name, outcome, blocks)
