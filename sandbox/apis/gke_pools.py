"""GKE node pools: create, get, list, update, autoscaling, management and size (container v1 REST)."""

from __future__ import annotations

from typing import Any, TYPE_CHECKING

from google.cloud import container_v1

from ..core import ApiError
from ..stores.gke import etag, find_pool, lookup, region_of, resolve_version, split_cluster_key, validate_autoscaling
from ..wire.google import emit_google, parse_google_body
from ..wire.http import Request
from .gke_build import build_pool
from .gke_ops import fault_status, new_operation, refuse_over_quota, refuse_if_busy, req_loc, take_fault

if TYPE_CHECKING:
    from ..core import SandboxContext as Sandbox


def create_node_pool(sb: "Sandbox", req: Request):
    key, cl, _ = lookup(sb, *req_loc(req), req.match["cluster"])
    body = parse_google_body(req, container_v1.CreateNodePoolRequest)
    if "nodePool" not in body:
        raise ApiError(400, "NodePool.name must be specified.")
    pool = build_pool(sb, key, cl, body["nodePool"])
    if find_pool(cl, pool["name"]) is not None:
        raise ApiError(409, f"Already exists: {key}/nodePools/{pool['name']}.")
    refuse_if_busy(sb, key)
    refuse_over_quota(sb, split_cluster_key(key)[0], pool)
    fault = take_fault(req)
    error = fault_status(req, fault, key, cl, pool)
    cl["nodePools"].append(pool)
    cl["status"] = "RECONCILING"
    etag(cl)
    op = new_operation(sb, key, "CREATE_NODE_POOL", f"{key}/nodePools/{pool['name']}",
                 {"kind": "create_pool", "pool": pool["name"]}, error)
    return emit_google(req, container_v1.Operation, op)


def get_node_pool(sb: "Sandbox", req: Request):
    _, _, pool = lookup(sb, *req_loc(req), req.match["cluster"], req.match["pool"])
    return emit_google(req, container_v1.NodePool, pool)


def list_node_pools(sb: "Sandbox", req: Request):
    _, cl, _ = lookup(sb, *req_loc(req), req.match["cluster"])
    return emit_google(req, container_v1.ListNodePoolsResponse, {"nodePools": cl.get("nodePools", [])})

# UpdateNodePoolRequest field -> (NodePool path, how the value is unwrapped). Wrapped messages
# (NodeTaints, NodeLabels, NetworkTags, ResourceLabels) replace the whole list/map.
POOL_UPDATES = {
    "locations": ("locations", None),
    "workloadMetadataConfig": ("config.workloadMetadataConfig", None),
    "upgradeSettings": ("upgradeSettings", None),
    "tags": ("config.tags", "tags"),
    "taints": ("config.taints", "taints"),
    "labels": ("config.labels", "labels"),
    "resourceLabels": ("config.resourceLabels", "labels"),
    "linuxNodeConfig": ("config.linuxNodeConfig", None),
    "kubeletConfig": ("config.kubeletConfig", None),
    "gcfsConfig": ("config.gcfsConfig", None),
    "confidentialNodes": ("config.confidentialNodes", None),
    "gvnic": ("config.gvnic", None),
    "fastSocket": ("config.fastSocket", None),
    "loggingConfig": ("config.loggingConfig", None),
    "windowsNodeConfig": ("config.windowsNodeConfig", None),
    "accelerators": ("config.accelerators", None),
    "machineType": ("config.machineType", None),
    "diskType": ("config.diskType", None),
    "diskSizeGb": ("config.diskSizeGb", None),
    "resourceManagerTags": ("config.resourceManagerTags", None),
    "containerdConfig": ("config.containerdConfig", None),
    "queuedProvisioning": ("queuedProvisioning", None),
    "storagePools": ("config.storagePools", None),
    "maxRunDuration": ("config.maxRunDuration", None),
    "flexStart": ("config.flexStart", None),
    "bootDisk": ("config.bootDisk", None),
    "nodeDrainConfig": ("nodeDrainConfig", None),
    "consolidationDelay": ("config.consolidationDelay", None),
    "taintConfig": ("config.taintConfig", None),
    "maintenancePolicy": ("maintenancePolicy", None),
}


def update_node_pool(sb: "Sandbox", req: Request):
    key, cl, pool = lookup(sb, *req_loc(req), req.match["cluster"], req.match["pool"])
    body = parse_google_body(req, container_v1.UpdateNodePoolRequest)
    # The proto marks node_version and image_type REQUIRED, but the server takes any one field and
    # refuses none: "At least one of ['node_version', 'image_type', 'updated_node_pool', 'locations', ...]
    # must be specified." (hashicorp/terraform-provider-google#19225).
    given = [f for f in ("nodeVersion", "imageType", *POOL_UPDATES) if body.get(f) not in (None, "", [], {})]
    if not given:
        raise ApiError(400, "At least one of ['node_version', 'image_type', 'updated_node_pool', 'locations', "
                            "'workload_metadata_config', 'upgrade_settings', 'kubelet_config', "
                            "'linux_node_config', 'tags', 'taints', 'labels', 'node_network_config', "
                            "'gcfs_config', 'gvnic', 'logging_config', 'resource_labels', "
                            "'windows_node_config', 'machine_type', 'disk_type', 'disk_size_gb', "
                            "'max_run_duration'] must be specified.")
    refuse_if_busy(sb, key)
    version = body.get("nodeVersion") or pool.get("version")
    if version == "-":
        version = cl["currentMasterVersion"]
    elif version not in (pool.get("version"), cl.get("currentMasterVersion")):  # e.g. after an auto-upgrade
        version = resolve_version(version, "Node")
    replace: dict[str, Any] = {"version": version,
                               "config.imageType": body.get("imageType") or pool["config"].get("imageType")}
    for field, (path, unwrap) in POOL_UPDATES.items():
        if field in body:
            value = body[field]
            replace[path] = value.get(unwrap, [] if unwrap in ("tags", "taints") else {}) if unwrap else value
    if "locations" in replace:
        region = region_of(cl["location"])
        bad = [z for z in replace["locations"] if region_of(z) != region]
        if bad or not replace["locations"]:
            raise ApiError(400, f"Invalid node pool locations {replace['locations']} for a cluster in {region}.")
    op_type = "UPGRADE_NODES" if version != pool.get("version") else "UPDATE_CLUSTER"
    return pool_operation(sb, req, key, cl, pool, op_type, {"kind": "pool_patch", "patch": {}, "replace": replace})


def delete_node_pool(sb: "Sandbox", req: Request):
    """DeleteNodePool: the pool STOPPING while its nodes are drained and removed; gone when done."""
    key, cl, pool = lookup(sb, *req_loc(req), req.match["cluster"], req.match["pool"])
    refuse_if_busy(sb, key)
    fault = take_fault(req)
    pool["status"] = "STOPPING"
    etag(pool)
    cl["status"] = "RECONCILING"
    etag(cl)
    op = new_operation(sb, key, "DELETE_NODE_POOL", f"{key}/nodePools/{pool['name']}",
                       {"kind": "delete_pool", "pool": pool["name"]}, fault_status(req, fault, key, cl, pool))
    return emit_google(req, container_v1.Operation, op)


def pool_operation(sb: "Sandbox", req: Request, key: str, cl: dict, pool: dict, op_type: str, effect: dict):
    """Start an operation on one pool: cluster and pool RECONCILING until it is done (an injected
    fault ends it with an error)."""
    fault = take_fault(req)
    pool["status"] = "RECONCILING"
    etag(pool)
    cl["status"] = "RECONCILING"
    etag(cl)
    op = new_operation(sb, key, op_type, f"{key}/nodePools/{pool['name']}", {"pool": pool["name"], **effect},
                       fault_status(req, fault, key, cl, pool))
    return emit_google(req, container_v1.Operation, op)


def set_autoscaling(sb: "Sandbox", req: Request):
    key, cl, pool = lookup(sb, *req_loc(req), req.match["cluster"], req.match["pool"])
    body = parse_google_body(req, container_v1.SetNodePoolAutoscalingRequest)
    auto = validate_autoscaling(body.get("autoscaling", {}))
    refuse_if_busy(sb, key)
    return pool_operation(sb, req, key, cl, pool, "UPDATE_CLUSTER",
                          {"kind": "pool_patch", "patch": {}, "replace": {"autoscaling": auto}})


def set_management(sb: "Sandbox", req: Request):
    key, cl, pool = lookup(sb, *req_loc(req), req.match["cluster"], req.match["pool"])
    body = parse_google_body(req, container_v1.SetNodePoolManagementRequest)
    refuse_if_busy(sb, key)
    return pool_operation(sb, req, key, cl, pool, "SET_NODE_POOL_MANAGEMENT",
                          {"kind": "pool_patch", "patch": {}, "replace": {"management": body.get("management", {})}})


def set_size(sb: "Sandbox", req: Request):
    key, cl, pool = lookup(sb, *req_loc(req), req.match["cluster"], req.match["pool"])
    body = parse_google_body(req, container_v1.SetNodePoolSizeRequest)
    count = int(body.get("nodeCount", 0))
    if count < 0:
        raise ApiError(400, "SetNodePoolSizeRequest.node_count must be >= 0.")
    refuse_if_busy(sb, key)
    return pool_operation(sb, req, key, cl, pool, "SET_NODE_POOL_SIZE", {"kind": "set_size", "count": count})
