"""Turns each substrate `Piece` into a partitioned Dagster asset and its asset checks.

The asset body strings the four steps together; an `in_sync` check per asset is `terraform plan`
for that piece, and the piece's `make doctor` checks sit beside it. Checks are `@asset_check`
functions (not `check_specs`) so the checks-only job can select them without their assets.
"""

from __future__ import annotations

import json
import os
from typing import Any

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetRecordsFilter,
    AssetKey,
    DataVersion,
    Failure,
    MaterializeResult,
    MetadataValue,
    StaticPartitionsDefinition,
    asset,
    asset_check,
)

from resources import GpuplatResource
from resources.models import KubeIdentity
from resources.errors import describe

from . import (
    apis_enabled,
    cluster,
    gpu_pool,
    gpu_stack,
    model_registry,
    platform_installed,
    secrets_seeded,
    service_accounts,
    snapshot_class,
    storage_class,
    workload_identity,
)
from .cluster import ADOPT_TAG
from .config import ConfigError, load_environment, load_environments
from .piece import Check, Outcome, Piece, PieceError, Run, rests, target_of
from .plan import Action, fingerprint, mutating, plan_table

PIECES: tuple[Piece, ...] = tuple(m.PIECE for m in (apis_enabled, service_accounts, cluster, workload_identity, gpu_pool,
                                                    model_registry, secrets_seeded, gpu_stack, storage_class,
                                                    snapshot_class, platform_installed))
APPROVE_VAR = "GPUPLAT_AUTO_APPROVE"
APPROVE_TAG = "gpuplat/approve"
# Deleting (a pause) has its own approval, asked even on the sandbox: approving paid creations never
# approves a teardown.
DESTROY_VAR = "GPUPLAT_APPROVE_DESTROY"
DESTROY_TAG = "gpuplat/approve-destroy"
ERR_DESTROY_APPROVAL = "destroy approval needed"
PAUSED = "paused (lifecycle: paused): nothing of this asset runs while the environment is paused"
SENSOR_TAG = "gpuplat/trigger"
OWNERS = ["team:platform"]
ERR_APPROVAL = "approval needed"
CLUSTER_PIECE = cluster.PIECE.name

ENVIRONMENTS = load_environments()
PARTITIONS = StaticPartitionsDefinition(ENVIRONMENTS.names or ["sandbox"])

# Observations made in this process, keyed by run, piece and environment, so the checks that run
# after an asset in the same run reuse its after-apply observation instead of asking again.
_OBSERVED: dict[tuple[str, str, str], tuple[Any, Any]] = {}


def approval_source(tags: dict, env) -> str:
    """Who approved paid or replacing changes for this run, or "" when nobody did."""
    if not env.needs_approval:
        return "not needed: the sandbox costs nothing"
    if tags.get(SENSOR_TAG):
        return ""  # a sensor never applies a paid or replacing change
    if tags.get(APPROVE_TAG) == "true":
        return f"run tag {APPROVE_TAG}=true"
    return f"{APPROVE_VAR}=1" if os.environ.get(APPROVE_VAR) == "1" else ""


def approved(tags: dict, env) -> bool:
    return bool(approval_source(tags, env))


def destroy_source(tags: dict) -> str:
    """Who approved deleting for this run ("" when nobody did; a sensor run never deletes)."""
    if tags.get(SENSOR_TAG):
        return ""
    if tags.get(DESTROY_TAG) == "true":
        return f"run tag {DESTROY_TAG}=true"
    return f"{DESTROY_VAR}=1" if os.environ.get(DESTROY_VAR) == "1" else ""


def destroy_message(piece: Piece, env, actions: list[Action], tags: dict) -> str:
    steps = "; ".join(a.summary() for a in actions if a.kind == "delete")
    if tags.get(SENSOR_TAG):
        how = "A drift-sensor run never deletes: materialize it yourself with the destroy approval"
    else:
        how = (f"Approve with {DESTROY_VAR}=1 dagster asset materialize -m gpuplat_assets --select {piece.name} "
               f"--partition {env.name}, or launch the run with tag {DESTROY_TAG}=true (the create approval "
               f"{APPROVE_TAG} does not cover it)")
    return (f"{ERR_DESTROY_APPROVAL} for {piece.name} in {env.name} (lifecycle: paused): nothing was changed. "
            f"Planned: {steps}. {how}")


def approval_message(piece: Piece, env, actions: list[Action], tags: dict) -> str:
    pending = [a.summary() for a in actions if a.needs_approval]
    if tags.get(SENSOR_TAG):
        how = "a drift-sensor run never applies changes that need approval: materialize it yourself"
    else:
        how = (f"approve with GPUPLAT_AUTO_APPROVE=1 dagster asset materialize -m gpuplat_assets --select "
               f"{piece.name} --partition {env.name}, or launch the run with tag {APPROVE_TAG}=true")
    return f"{ERR_APPROVAL} for {piece.name} in {env.name}: {'; '.join(pending)}. {how}"


def recorded_identity(instance, env_name: str) -> KubeIdentity | None:
    """The kube target recorded by the latest materialization of `cluster` for this environment."""
    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AssetKey(CLUSTER_PIECE), asset_partitions=[env_name]), limit=1).records
    for record in records:
        value = record.asset_materialization.metadata.get("kube_identity")
        data = getattr(value, "data", None) or getattr(value, "value", None)
        if isinstance(data, dict) and data.get("server") and data.get("kube_system_uid"):
            return KubeIdentity(data["server"], data["kube_system_uid"])
    return None


ERR_NO_ENVIRONMENT = "no environment chosen"


def require_environment(context) -> None:
    """A run without a partition (the UI's "Execute all" on an asset's checks launches one) has no
    environment to look at: refuse in one line instead of Dagster's "non-partitioned run" internals."""
    if context.has_partition_key and context.partition_key in PARTITIONS.get_partition_keys():
        return
    given = context.partition_key if context.has_partition_key else None
    raise Failure(description=f"{ERR_NO_ENVIRONMENT}: gpuplat works on one environment at a time"
                              f"{f' and {given!r} is none of them' if given else ''}; launch the drift_checks job "
                              f"(or materialize) for one of {', '.join(PARTITIONS.get_partition_keys())}",
                  allow_retries=False)


def open_run(context, resource: GpuplatResource):
    require_environment(context)
    try:
        env = load_environment(context.partition_key)
    except ConfigError as exc:
        raise Failure(description=str(exc), metadata={"file": exc.path, "key": exc.key}) from None
    tags = dict(context.run.tags) if context.run else {}
    identity = None if tags.get(ADOPT_TAG) == "true" else recorded_identity(context.instance, env.name)
    return Run(env, resource.connect(target_of(env, identity)), context.log, approved(tags, env)), tags


def observe_and_plan(piece: Piece, run: Run) -> tuple[Any, Any, list[Action]]:
    spec = piece.desired(run.env)
    observed = piece.observe(run, spec)
    return spec, observed, piece.plan(spec, observed)


def _fail(piece: Piece, env, exc: BaseException):
    # A fork file that is missing or malformed is bad input, told like a config error.
    text = str(exc) if isinstance(exc, (PieceError, ConfigError)) else describe(exc)
    if text is None:
        raise exc
    raise Failure(description=f"{piece.name} in {env.name}: {text}") from None


def reconcile(piece: Piece, context, resource: GpuplatResource) -> MaterializeResult:
    run, tags = open_run(context, resource)
    env = run.env
    if rests(piece, env):
        return MaterializeResult(metadata={"plan": MetadataValue.md(PAUSED), "lifecycle": "paused",
                                           "actions_applied": 0}, data_version=DataVersion("paused"))
    try:
        spec, observed, actions = observe_and_plan(piece, run)
        if any(a.needs_approval for a in actions) and not run.approved:
            raise Failure(description=approval_message(piece, env, actions, tags),
                          metadata={"plan": MetadataValue.md(plan_table(actions))})
        if any(a.kind == "delete" for a in actions) and not destroy_source(tags):
            raise Failure(description=destroy_message(piece, env, actions, tags),
                          metadata={"plan": MetadataValue.md(plan_table(actions))})
        context.log.info(f"{piece.name} plan for {env.name}:\n{plan_table(actions)}")
        after = actions
        if mutating(actions):
            piece.apply(run, spec, observed, actions)
            observed = piece.observe(run, spec)
            after = piece.plan(spec, observed)
    except Failure:
        raise
    except Exception as exc:  # known outside-world errors become one clear line; bugs surface as they are
        _fail(piece, env, exc)
    _OBSERVED[(context.run.run_id, piece.name, env.name)] = (spec, observed)
    blocked = [a for a in after if a.kind == "cannot-fix"]
    if blocked:
        raise Failure(description=f"{piece.name} in {env.name} needs a human: " + "; ".join(a.summary() for a in blocked),
                      metadata={"plan": MetadataValue.md(plan_table(actions)),
                                "remaining": MetadataValue.md(plan_table(after))})
    owned = observed.owned()
    fp = fingerprint(owned)
    meta: dict[str, Any] = {
        "plan": MetadataValue.md(plan_table(actions)),
        "observed": MetadataValue.json(owned),
        "fingerprint": fp,
        "actions_applied": len(mutating(actions)),
        "owned_fields": ", ".join(piece.owned_fields),
    }
    if any(a.needs_approval for a in actions):
        meta["approval"] = approval_source(tags, env)
    if any(a.kind == "delete" for a in actions):
        meta["destroy_approval"] = destroy_source(tags)
    meta["lifecycle"] = env.lifecycle
    for key, url in piece.links(env, observed).items():
        meta[key] = MetadataValue.url(url)
    for key, value in piece.record(env, observed).items():
        meta[key] = MetadataValue.json(value)
    meta.update(piece.provenance(spec))
    if piece.report is not None:
        try:
            meta.update(piece.report(run, spec, observed))
        except Exception as exc:  # a price that cannot be read never fails the materialization
            text = describe(exc)
            if text is None:
                raise
            meta["cost_unknown"] = f"cannot price the environment: {text}"
    kube = run.conn.__dict__.get("kube")  # only when this piece used the cluster: never connect just to say so
    if kube is not None:
        t = kube.target
        meta["kube_target"] = f"{t.context} @ {t.server} ({t.kubeconfig})"
    return MaterializeResult(metadata=meta, data_version=DataVersion(fp))


def _check_result(piece: Piece, check_name: str, outcome: Outcome) -> AssetCheckResult:
    meta = {k: (MetadataValue.md(v) if k == "plan" else v) for k, v in outcome.metadata.items()
            if v is not None and v != ""}
    return AssetCheckResult(passed=outcome.passed, check_name=check_name, asset_key=AssetKey(piece.name),
                            description=outcome.description, metadata=meta, severity=AssetCheckSeverity.ERROR)


def cached_or_observe(piece: Piece, context, resource: GpuplatResource) -> tuple[Run, Any, Any]:
    """The run, and the piece's desired and observed state: this run's own observation when the asset
    was materialized in it; (None, None) for a piece resting in a paused environment (nothing to look at)."""
    run, _ = open_run(context, resource)
    if rests(piece, run.env):
        return run, None, None
    hit = _OBSERVED.get((context.run.run_id, piece.name, run.env.name))
    if hit is not None:
        return run, hit[0], hit[1]
    spec = piece.desired(run.env)
    observed = piece.observe(run, spec)
    _OBSERVED[(context.run.run_id, piece.name, run.env.name)] = (spec, observed)
    return run, spec, observed


def evaluate_check(piece: Piece, check: Check | None, context, resource: GpuplatResource) -> AssetCheckResult:
    name = check.name if check else "in_sync"
    require_environment(context)  # raised, not recorded: a result needs an environment to belong to
    try:
        run, spec, observed = cached_or_observe(piece, context, resource)
    except Failure as exc:
        return _check_result(piece, name, Outcome(False, exc.description or "config error"))
    except Exception as exc:
        text = str(exc) if isinstance(exc, (PieceError, ConfigError)) else describe(exc)
        if text is None:
            raise
        return _check_result(piece, name, Outcome(False, f"cannot observe: {text}", {"error": text}))
    if rests(piece, run.env):
        return _check_result(piece, name, Outcome(True, PAUSED))
    if check is None:
        actions = piece.plan(spec, observed)
        return _check_result(piece, name, Outcome(
            not actions, "in sync" if not actions else f"{len(actions)} difference(s): " +
            "; ".join(a.summary() for a in actions),
            {"plan": plan_table(actions), "owned_fields": ", ".join(piece.owned_fields),
             "observed": json.dumps(observed.owned(), sort_keys=True)[:2000]}))
    return _check_result(piece, name, check.evaluate(spec, observed, run.env))


def build_asset(piece: Piece):
    @asset(name=piece.name, partitions_def=PARTITIONS, deps=list(piece.deps), group_name=piece.group,
           kinds=set(piece.kinds), owners=OWNERS, description=piece.description,
           metadata={"owned_fields": ", ".join(piece.owned_fields)})
    def _asset(context, gpuplat: GpuplatResource) -> MaterializeResult:
        return reconcile(piece, context, gpuplat)

    return _asset


def build_checks(piece: Piece) -> list:
    out = []
    for check in (None, *piece.checks):
        name = check.name if check else "in_sync"
        description = check.description if check else f"The live {piece.name} matches the config: its plan is empty."

        def _make(check=check):
            @asset_check(asset=piece.name, name=name, description=description, partitions_def=PARTITIONS,
                         blocking=bool(check and check.blocking))
            def _check(context, gpuplat: GpuplatResource) -> AssetCheckResult:
                return evaluate_check(piece, check, context, gpuplat)
            return _check
        out.append(_make())
    return out


ASSETS = [build_asset(p) for p in PIECES]
CHECKS = [c for p in PIECES for c in build_checks(p)]
