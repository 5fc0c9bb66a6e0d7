"""GKE, container v1 REST: clusters (and the routes of node pools and operations).

Answers are written with the client library's own message types, so the wire format is Google's:
enum names for plain JSON clients, integers for `$alt=json;enum-encoding=int`, zero values omitted,
int64 as strings. What GKE fills in by itself is filled in here too (selfLink, status, endpoint,
versions, instance group URLs, default image and disk type, auto-upgrade/auto-repair, ...).
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

from google.cloud import container_v1

from ..core import ApiError
from ..stores.gke import cluster_key, etag, find_pool, lookup, not_found, resolve_version, state, validate_autoscaling
from ..wire.google import emit_google, parse_google_body
from ..wire.http import Request, Route
from .gke_build import build_cluster
from .gke_ops import fault_status, refuse_over_quota, get_operation, get_server_config, list_operations, new_operation, refuse_if_busy, req_loc, take_fault
from .gke_pools import (create_node_pool, delete_node_pool, get_node_pool, list_node_pools, set_autoscaling,
                        set_management, set_size, update_node_pool)

if TYPE_CHECKING:
    from ..core import SandboxContext as Sandbox


def create_cluster(sb: "Sandbox", req: Request):
    project, location = req_loc(req)
    body = parse_google_body(req, container_v1.CreateClusterRequest)
    if "cluster" not in body:
        raise ApiError(400, "Cluster.name must be specified.")
    cl = build_cluster(sb, project, location, body["cluster"])
    key = cluster_key(project, location, cl["name"])
    gke = state(sb)
    if key in gke["clusters"]:
        raise ApiError(409, f"Already exists: {key}.")
    for pool in cl.get("nodePools", []):
        refuse_over_quota(sb, project, pool)
    error = fault_status(req, take_fault(req), key, cl)
    gke["clusters"][key] = cl
    op = new_operation(sb, key, "CREATE_CLUSTER", key, {"kind": "create_cluster"}, error)
    return emit_google(req, container_v1.Operation, op)


def get_cluster(sb: "Sandbox", req: Request):
    _, cl, _ = lookup(sb, *req_loc(req), req.match["cluster"])
    return emit_google(req, container_v1.Cluster, cl)


def list_clusters(sb: "Sandbox", req: Request):
    project, location = req_loc(req)
    prefix = f"projects/{project}/locations/"
    out = [cl for key, cl in sorted(state(sb)["clusters"].items())
           if key.startswith(prefix) and (location == "-" or cl.get("location") == location)]
    return emit_google(req, container_v1.ListClustersResponse, {"clusters": out})


def update_cluster(sb: "Sandbox", req: Request):
    key, cl, _ = lookup(sb, *req_loc(req), req.match["cluster"])
    body = parse_google_body(req, container_v1.UpdateClusterRequest)
    update = body.get("update") or {}
    # ClusterUpdate: "Exactly one update can be applied to a cluster with each request, so at most one
    # field can be provided" (cluster_service.proto); the node pool it names is not an update.
    fields = [k for k in update if k not in ("etag", "desiredNodePoolId")]
    if not fields:
        raise ApiError(400, "Must specify a field to update.")  # hashicorp/terraform-provider-google#23462
    if len(fields) > 1:
        raise ApiError(400, f"Exactly one update can be applied to a cluster with each request, so at most one "
                            f"field can be provided; got {', '.join(sorted(fields))}.")
    refuse_if_busy(sb, key)
    if update.get("desiredNodePoolId") and find_pool(cl, update["desiredNodePoolId"]) is None:
        raise not_found(f"{key}/nodePools/{update['desiredNodePoolId']}")
    if "desiredMasterVersion" in update:
        resolve_version(update["desiredMasterVersion"], "Master")
    per_pool = [f for f in ("desiredNodePoolAutoscaling", "desiredImageType") if f in update]
    if per_pool and not update.get("desiredNodePoolId") and len(cl.get("nodePools", [])) > 1:
        raise ApiError(400, f"{per_pool[0]} needs desired_node_pool_id when the cluster has more than one node pool.")
    if "desiredNodePoolAutoscaling" in update:
        validate_autoscaling(copy.deepcopy(update["desiredNodePoolAutoscaling"]))
    op_type = ("UPGRADE_MASTER" if "desiredMasterVersion" in update else
               "UPGRADE_NODES" if "desiredNodeVersion" in update else "UPDATE_CLUSTER")
    fault = take_fault(req)
    cl["status"] = "RECONCILING"
    etag(cl)
    op = new_operation(sb, key, op_type, key, {"kind": "update_cluster", "update": update},
                 fault_status(req, fault, key, cl))
    return emit_google(req, container_v1.Operation, op)

def delete_cluster(sb: "Sandbox", req: Request):
    """DeleteCluster: STOPPING while the operation runs; gone, Kubernetes API and all, when it is done
    (https://cloud.google.com/kubernetes-engine/docs/how-to/deleting-a-cluster)."""
    key, cl, _ = lookup(sb, *req_loc(req), req.match["cluster"])
    refuse_if_busy(sb, key)
    fault = take_fault(req)
    cl["status"] = "STOPPING"
    etag(cl)
    op = new_operation(sb, key, "DELETE_CLUSTER", key, {"kind": "delete_cluster"}, fault_status(req, fault, key, cl))
    return emit_google(req, container_v1.Operation, op)


_P = r"/v1/projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)"

_Z = r"/v1/projects/(?P<project>[^/]+)/zones/(?P<location>[^/]+)"

_C = r"/clusters/(?P<cluster>[^/:]+)"

_NP = r"/nodePools/(?P<pool>[^/:]+)"

_OP = r"/operations/(?P<operation>[^/:]+)"

ROUTES = [
    Route("POST", _P + "/clusters", create_cluster, "CreateCluster", True),
    Route("GET", _P + "/clusters", list_clusters, "ListClusters"),
    Route("GET", _P + _C, get_cluster, "GetCluster"),
    Route("PUT", _P + _C, update_cluster, "UpdateCluster", True),
    Route("DELETE", _P + _C, delete_cluster, "DeleteCluster", True),
    Route("DELETE", _P + _C + _NP, delete_node_pool, "DeleteNodePool", True),
    Route("POST", _P + _C + "/nodePools", create_node_pool, "CreateNodePool", True),
    Route("GET", _P + _C + "/nodePools", list_node_pools, "ListNodePools"),
    Route("GET", _P + _C + _NP, get_node_pool, "GetNodePool"),
    Route("PUT", _P + _C + _NP, update_node_pool, "UpdateNodePool", True),
    Route("POST", _P + _C + _NP + ":setAutoscaling", set_autoscaling, "SetNodePoolAutoscaling", True),
    Route("POST", _P + _C + _NP + ":setSize", set_size, "SetNodePoolSize", True),
    Route("POST", _P + _C + _NP + ":setManagement", set_management, "SetNodePoolManagement", True),
    Route("GET", _P + _OP, get_operation, "GetOperation"),
    Route("GET", _P + "/operations", list_operations, "ListOperations"),
    Route("GET", _P + "/serverConfig", get_server_config, "GetServerConfig"),
    # The deprecated zones/ forms the same client can also send.
    Route("POST", _Z + "/clusters", create_cluster, "CreateCluster", True),
    Route("GET", _Z + "/clusters", list_clusters, "ListClusters"),
    Route("GET", _Z + _C, get_cluster, "GetCluster"),
    Route("PUT", _Z + _C, update_cluster, "UpdateCluster", True),
    Route("DELETE", _Z + _C, delete_cluster, "DeleteCluster", True),
    Route("DELETE", _Z + _C + _NP, delete_node_pool, "DeleteNodePool", True),
    Route("POST", _Z + _C + "/nodePools", create_node_pool, "CreateNodePool", True),
    Route("GET", _Z + _C + "/nodePools", list_node_pools, "ListNodePools"),
    Route("GET", _Z + _C + _NP, get_node_pool, "GetNodePool"),
    Route("POST", _Z + _C + _NP + "/update", update_node_pool, "UpdateNodePool", True),
    Route("POST", _Z + _C + _NP + "/autoscaling", set_autoscaling, "SetNodePoolAutoscaling", True),
    Route("POST", _Z + _C + _NP + "/setSize", set_size, "SetNodePoolSize", True),
    Route("POST", _Z + _C + _NP + "/setManagement", set_management, "SetNodePoolManagement", True),
    Route("GET", _Z + _OP, get_operation, "GetOperation"),
    Route("GET", _Z + "/operations", list_operations, "ListOperations"),
    Route("GET", _Z + "/serverconfig", get_server_config, "GetServerConfig"),
]
