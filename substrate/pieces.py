"""Every substrate piece, in the order of the lineage: from the cloud to the platform."""

from __future__ import annotations

from . import (
    apis_enabled,
    argocd,
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
from .piece import Piece

PIECES: tuple[Piece, ...] = (apis_enabled.PIECE, service_accounts.PIECE, secrets_seeded.PIECE, model_registry.PIECE,
                             workload_identity.PIECE, cluster.PIECE, gpu_pool.PIECE, gpu_stack.PIECE,
                             storage_class.PIECE, snapshot_class.PIECE, argocd.PIECE, platform_installed.PIECE)
BY_NAME: dict[str, Piece] = {p.name: p for p in PIECES}
