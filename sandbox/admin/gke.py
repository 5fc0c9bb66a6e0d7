"""Admin verbs on the simulated GKE: stockouts, drift behind gpuplat's back, auto-upgrades, resizes."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

from google.cloud import container_v1

from ..apis.gke_ops import new_operation
from ..core import ApiError
from ..sims.gke_nodes import kube_of, resize_pool, sync_nodes
from ..stores.gke import canonical, deep_merge, etag, find_pool, not_found, resolve_cluster_key, state
from ..wire.http import Request, Route

if TYPE_CHECKING:
    from ..core import SandboxContext as Sandbox


def admin_cluster(sb: "Sandbox", body: dict) -> tuple[str, dict]:
    name = body.get("cluster")
    if not isinstance(name, str) or not name:
        raise ApiError(400, "needs `cluster`: projects/P/locations/L/clusters/C")
    key = resolve_cluster_key(sb, name)
    return key, state(sb)["clusters"][key]


def admin_add_stockout(sb: "Sandbox", req: Request):
    body = req.json()
    if not body.get("zone") or not body.get("acceleratorType"):
        raise ApiError(400, "a stockout needs `zone` and `acceleratorType` (e.g. us-central1-a, nvidia-l4)")
    entry = {"zone": body["zone"], "acceleratorType": body["acceleratorType"]}
    gke = state(sb)
    if entry not in gke["stockouts"]:
        gke["stockouts"].append(entry)
        sb.store.mark()
    return {"stockouts": gke["stockouts"]}


def admin_list_stockouts(sb: "Sandbox", req: Request):
    return {"stockouts": state(sb)["stockouts"]}


def admin_clear_stockouts(sb: "Sandbox", req: Request):
    """Without a body: clear every stockout; with {zone?, acceleratorType?}: only the matching ones."""
    body = req.json()
    gke = state(sb)
    gke["stockouts"] = [s for s in gke["stockouts"]
                        if body and any(k in body and s[k] != body[k] for k in ("zone", "acceleratorType"))]
    sb.store.mark()
    return {"stockouts": gke["stockouts"]}


def admin_drift_pool(sb: "Sandbox", req: Request):
    body = req.json()
    key, cl = admin_cluster(sb, body)
    pool = find_pool(cl, body.get("nodePool", ""))
    if pool is None:
        raise not_found(f"{key}/nodePools/{body.get('nodePool')}")
    if not isinstance(body.get("patch"), dict):
        raise ApiError(400, "drift needs a `patch` object (NodePool JSON, camelCase)")
    new = canonical(container_v1.NodePool, deep_merge(copy.deepcopy(pool), body["patch"]))
    config_changed = new.get("config") != pool.get("config")
    pool.clear()
    pool.update(new)
    etag(pool)
    etag(cl)
    if config_changed:
        sync_nodes(sb, key, pool)
    sb.store.mark()
    return pool


def admin_drift_cluster(sb: "Sandbox", req: Request):
    body = req.json()
    key, cl = admin_cluster(sb, body)
    if not isinstance(body.get("patch"), dict):
        raise ApiError(400, "drift needs a `patch` object (Cluster JSON, camelCase)")
    new = canonical(container_v1.Cluster, deep_merge(copy.deepcopy(cl), body["patch"]))
    cl.clear()
    cl.update(new)
    etag(cl)
    sb.store.mark()
    return cl


def admin_upgrade(sb: "Sandbox", req: Request):
    """Simulated auto-upgrade: moves the master and (unless `nodePools: false`) every pool to `version`.

    `busySeconds`: the upgrade's operation keeps running for that long on the sandbox's clock, the cluster
    RECONCILING meanwhile; every mutating call on it is refused as GKE refuses one during an upgrade
    (a new cluster is often busy for many minutes with its first upgrade or repair)."""
    body = req.json()
    key, cl = admin_cluster(sb, body)
    version = body.get("version")
    if not isinstance(version, str) or not version:
        raise ApiError(400, "upgrade needs `version`, e.g. 1.34.1-gke.1100")
    busy = float(body.get("busySeconds") or 0)
    cl["currentMasterVersion"] = version
    kube_of(sb, key).data["meta"]["gitVersion"] = f"v{version}"
    if body.get("nodePools", True):
        for pool in cl.get("nodePools", []):
            pool["version"] = version
            etag(pool)
            sync_nodes(sb, key, pool)
        cl["currentNodeVersion"] = version
    etag(cl)
    op = new_operation(sb, key, "UPGRADE_MASTER", key, {"kind": "noop"})
    gke = state(sb)
    if busy > 0:
        op_key = gke["pending"][-1]
        op.update({"status": "RUNNING", "detail": "Automatic upgrade (simulated)"})
        gke["operations"][op_key].update(op=op, holdUntil=sb.clock.now() + busy)
        cl["status"] = "RECONCILING"
        etag(cl)
        sb.store.mark()
        return cl
    op_key = gke["pending"].pop()
    op.update({"status": "DONE", "endTime": sb.clock.rfc3339(), "detail": "Automatic upgrade (simulated)"})
    gke["operations"][op_key]["op"] = op
    sb.store.mark()
    return cl


def admin_resize(sb: "Sandbox", req: Request):
    """Resize a pool as the autoscaler would: {cluster, nodePool, count} (no checks, no operation)."""
    body = req.json()
    key, _ = admin_cluster(sb, body)
    count = body.get("count")
    if not isinstance(count, int):
        raise ApiError(400, "resize needs an integer `count`")
    return {"nodes": resize_pool(sb, key, body.get("nodePool", ""), count)}

ADMIN_ROUTES = [
    Route("GET", r"/sandbox/gke/stockouts", admin_list_stockouts, "gke.stockouts.list"),
    Route("POST", r"/sandbox/gke/stockouts", admin_add_stockout, "gke.stockouts.add"),
    Route("DELETE", r"/sandbox/gke/stockouts", admin_clear_stockouts, "gke.stockouts.clear"),
    Route("POST", r"/sandbox/gke/drift/node-pool", admin_drift_pool, "gke.drift.node-pool"),
    Route("POST", r"/sandbox/gke/drift/cluster", admin_drift_cluster, "gke.drift.cluster"),
    Route("POST", r"/sandbox/gke/upgrade", admin_upgrade, "gke.upgrade"),
    Route("POST", r"/sandbox/gke/resize", admin_resize, "gke.resize"),
]
