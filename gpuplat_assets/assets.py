"""Each substrate piece as a partitioned Dagster asset, and its checks as asset checks.

The asset body is `substrate.reconcile.reconcile` (desired -> observe -> plan -> apply); the `in_sync`
check of each asset is `terraform plan` for that piece and blocks what depends on it, so nothing runs
on top of a piece with unapplied actions. Checks are `@asset_check` functions (not `check_specs`) so
the checks-only job can select them without their assets.
"""

from __future__ import annotations

from dagster import AssetCheckResult, MaterializeResult, asset, asset_check

from resources import GpuplatResource
from substrate.partitions import ENVIRONMENTS
from substrate.piece import Check, Piece
from substrate.pieces import PIECES
from substrate.reconcile import evaluate_check, reconcile

OWNERS = ["team:platform"]


def build_asset(piece: Piece):
    @asset(name=piece.name, partitions_def=ENVIRONMENTS, deps=list(piece.deps), group_name=piece.group,
           kinds=set(piece.kinds), owners=OWNERS, description=piece.description,
           metadata={"owned_fields": ", ".join(piece.owned_fields)})
    def _asset(context, gpuplat: GpuplatResource) -> MaterializeResult:
        return reconcile(piece, context, gpuplat)

    return _asset


def build_checks(piece: Piece) -> list:
    out = []
    for check in (None, *piece.checks):
        out.append(_build_check(piece, check))
    return out


def _build_check(piece: Piece, check: Check | None):
    name = check.name if check else "in_sync"
    description = check.description if check else (f"The live {piece.name} matches the config: its plan is empty "
                                                    f"(blocks what depends on it while it is not).")

    @asset_check(asset=piece.name, name=name, description=description, partitions_def=ENVIRONMENTS,
                 blocking=check.blocking if check else True)
    def _check(context, gpuplat: GpuplatResource) -> AssetCheckResult:
        return evaluate_check(piece, check, context, gpuplat)

    return _check


ASSETS = [build_asset(p) for p in PIECES]
CHECKS = [c for p in PIECES for c in build_checks(p)]
