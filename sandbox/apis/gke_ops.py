"""GKE's long-running operations as the API shows them, and the rules every mutating call shares.

While an operation runs, the cluster is PROVISIONING (creation) or RECONCILING, and a second
mutating call on that cluster fails with 400 FAILED_PRECONDITION ("Cluster is running incompatible
operation ..."). Injected faults `quota` and `stockout` on a creating/updating call end the
operation DONE with an error.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from google.cloud import container_v1

from ..core import ApiError
from ..stores.compute import quota_problem
from ..stores.gke import DEFAULT_VERSION, initial_size, LINK, VALID_VERSIONS, accelerator, gpu_quota_metric, machine_shape, not_found, quota_message, split_cluster_key, state, stockout_message
from ..wire.google import emit_google
from ..wire.http import Request, fault_error

if TYPE_CHECKING:
    from ..core import SandboxContext as Sandbox


def req_loc(req: Request) -> tuple[str, str]:
    return req.match["project"], req.match["location"]


def take_fault(req: Request) -> str | None:
    """Consume an injected `quota`/`stockout` fault: this handler reports it in the operation."""
    kind, req.fault = req.fault, None
    return kind


def refuse_if_busy(sb: "Sandbox", cluster_key: str) -> None:
    """400 FAILED_PRECONDITION while an operation runs on the cluster, in GKE's words: during an upgrade
    "Operation <op> is currently upgrading cluster <name>. Please wait and try again once it is done."
    (hashicorp/terraform-provider-google#3650), otherwise "Cluster is running incompatible operation <op>."
    (rancher/gke-operator#509)."""
    gke = state(sb)
    for op_key in gke["pending"]:
        rec = gke["operations"][op_key]
        if rec["cluster"] == cluster_key:
            name = rec["op"]["name"]
            if rec["op"]["operationType"] == "UPGRADE_MASTER":
                message = (f"Operation {name} is currently upgrading cluster {split_cluster_key(cluster_key)[2]}. "
                           f"Please wait and try again once it is done.")
            else:
                message = f"Cluster is running incompatible operation {name}."
            raise ApiError(400, message, status="FAILED_PRECONDITION")


def refuse_over_quota(sb: "Sandbox", project: str, pool: dict) -> None:
    """GKE checks quota before it accepts a create: a pool whose first nodes would not fit is refused at
    once with 403 PERMISSION_DENIED "Insufficient regional quota to satisfy request: resource ..."
    (GoogleCloudPlatform/cloud-ops-sandbox#44, googlecodelabs/feedback#950), not as a failed operation.
    Nodes are counted per zone (`initial_size`), so a regional pool asks for three times its count."""
    problem = quota_problem(sb, project, pool, initial_size(pool))
    if problem:
        raise ApiError(403, problem, status="PERMISSION_DENIED")


def new_operation(sb: "Sandbox", cluster_key: str, op_type: str, target: str, effect: dict,
            error: dict | None = None) -> dict:
    gke = state(sb)
    project, location, _ = split_cluster_key(cluster_key)
    now = sb.clock.now()
    name = f"operation-{int(now * 1000)}-{uuid.uuid4().hex[:8]}"
    op_key = f"projects/{project}/locations/{location}/operations/{name}"
    op = {"name": name, "zone": location, "operationType": op_type, "status": "PENDING",
          "selfLink": f"{LINK}/{op_key}", "targetLink": f"{LINK}/{target}", "location": location,
          "startTime": sb.clock.rfc3339(now)}
    gke["operations"][op_key] = {"op": op, "cluster": cluster_key, "start": now, "effect": effect, "error": error}
    gke["pending"].append(op_key)
    sb.store.mark()
    return op


def fault_status(req: Request, fault: str | None, key: str, cl: dict, pool: dict | None = None) -> dict | None:
    if fault is None:
        return None
    project = split_cluster_key(key)[0]
    pool = pool or next((p for p in cl.get("nodePools", []) if accelerator(p)[0]),
                        (cl.get("nodePools") or [{}])[0])
    accel, per = accelerator(pool)
    zone = (pool.get("locations") or [cl.get("location", "")])[0]
    machine = pool.get("config", {}).get("machineType", "e2-medium")
    if fault == "stockout":
        return {"code": 8, "message": stockout_message(project, zone, accel or "instances", machine)}
    metric = gpu_quota_metric(accel) if accel else "CPUS"
    return {"code": 8, "message": quota_message(project, metric, float(per or machine_shape(machine)[0]),
                                                  0.0, 0.0, True)}


def get_operation(sb: "Sandbox", req: Request):
    if req.fault is not None:  # a failed poll must not advance the operation
        fault, req.fault = req.fault, None
        raise fault_error(fault, "GetOperation")
    project, location = req_loc(req)
    op_key = f"projects/{project}/locations/{location}/operations/{req.match['operation']}"
    gke = state(sb)
    rec = gke["operations"].get(op_key)
    if rec is None:
        raise not_found(op_key)
    op = rec["op"]
    if op["status"] == "PENDING":
        op["status"] = "RUNNING"
        sb.store.mark()
    elif op["status"] == "RUNNING" and not rec.get("due") and sb.clock.now() >= rec.get("holdUntil", 0):
        # The simulated control plane (sims.gke_control) lands a polled operation's effect now.
        rec["due"] = True
        sb.store.mark()
        sb.reconcile()
    return emit_google(req, container_v1.Operation, op)


def list_operations(sb: "Sandbox", req: Request):
    project, location = req_loc(req)
    prefix = f"projects/{project}/locations/"
    ops = [rec["op"] for k, rec in state(sb)["operations"].items()
           if k.startswith(prefix) and (location == "-" or rec["op"]["location"] == location)]
    return emit_google(req, container_v1.ListOperationsResponse, {"operations": ops})


def get_server_config(sb: "Sandbox", req: Request):
    versions = list(VALID_VERSIONS)
    return emit_google(req, container_v1.ServerConfig, {
        "defaultClusterVersion": DEFAULT_VERSION, "validMasterVersions": versions, "validNodeVersions": versions,
        "defaultImageType": "COS_CONTAINERD", "validImageTypes": ["COS_CONTAINERD", "UBUNTU_CONTAINERD"],
        "channels": [{"channel": ch, "defaultVersion": DEFAULT_VERSION, "validVersions": versions}
                     for ch in ("RAPID", "REGULAR", "STABLE")],
    })
