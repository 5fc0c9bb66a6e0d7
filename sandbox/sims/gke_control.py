"""Simulation of GKE's control plane: long-running operations finishing, clusters getting their Kubernetes API.

Every mutating call returns an `Operation` that goes PENDING -> RUNNING -> DONE: each
`get_operation` advances it one step, and it is DONE at the latest 5 simulated seconds after it
started. Its effect (cluster or pool RUNNING, an update applied, nodes created) lands at DONE; a
failure is reported in `op.error` (google.rpc.Status) with status DONE. A cluster that reaches
RUNNING gets a sandbox Kubernetes API seeded with what GKE ships (namespaces, StorageClasses, the PD
CSI driver, the snapshot CRDs but no VolumeSnapshotClass, the GKE-managed NVIDIA device plugin).
"""

from __future__ import annotations

import copy
import re
from typing import Any, TYPE_CHECKING

from google.cloud import container_v1

from ..core import ApiError, kube_id_for_gke
from ..stores.compute import capacity_problem
from ..stores.gke import ACCEL_LABEL, DEVICE_PLUGIN, DEVICE_PLUGINS, OP_DONE_AFTER_S, canonical, deep_merge, etag, find_pool, initial_size, resolve_version, split_cluster_key, state, validate_autoscaling
from ..stores.kube import KubeStore
from .disruption import allows_none, covers
from .gke_nodes import kube_of, pool_nodes, pool_size, resize_pool, sync_nodes

if TYPE_CHECKING:
    from ..core import SandboxContext as Sandbox


def _crd(group: str, plural: str, singular: str, kind: str, scope: str, short: list[str], status: bool) -> dict:
    version = {"name": "v1", "served": True, "storage": True,
               "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}}
    if status:
        version["subresources"] = {"status": {}}
    names = {"kind": kind, "listKind": f"{kind}List", "plural": plural, "singular": singular, "shortNames": short}
    return {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}",
                     "annotations": {"api-approved.kubernetes.io":
                                     "https://github.com/kubernetes-csi/external-snapshotter/pull/814"},
                     "labels": {"addonmanager.kubernetes.io/mode": "Reconcile"}},
        "spec": {"group": group, "names": names, "scope": scope, "versions": [version]},
        "status": {"acceptedNames": names, "storedVersions": ["v1"],
                   "conditions": [{"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
                                   "message": "no conflicts found"},
                                  {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
                                   "message": "the initial names have been accepted"}]},
    }


def _storage_class(name: str, provisioner: str, params: dict, binding: str, default: bool) -> dict:
    meta: dict[str, Any] = {"name": name, "labels": {"addonmanager.kubernetes.io/mode": "EnsureExists"}}
    if default:
        meta["annotations"] = {"storageclass.kubernetes.io/is-default-class": "true"}
    if provisioner == "pd.csi.storage.gke.io":
        meta["labels"]["components.gke.io/component-name"] = "pdcsi"
    return {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": meta,
            "provisioner": provisioner, "parameters": params, "reclaimPolicy": "Delete",
            "volumeBindingMode": binding, "allowVolumeExpansion": True}


def _device_plugin_daemonset(name: str) -> dict:
    labels = {"k8s-app": DEVICE_PLUGIN}
    return {
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": name, "namespace": "kube-system",
                     "labels": {**labels, "addonmanager.kubernetes.io/mode": "Reconcile"}},
        "spec": {
            "selector": {"matchLabels": labels},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "priorityClassName": "system-node-critical",
                    "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [{"matchExpressions": [
                            {"key": ACCEL_LABEL, "operator": "Exists"}]}]}}},
                    "tolerations": [{"operator": "Exists"}],
                    "containers": [{
                        "name": DEVICE_PLUGIN,
                        "image": "gke.gcr.io/nvidia-gpu-device-plugin:v1.0.25-gke.80",
                        "command": ["/usr/bin/nvidia-gpu-device-plugin", "-logtostderr",
                                    "--enable-container-gpu-metrics", "--enable-health-monitoring"],
                        "resources": {"limits": {"memory": "50Mi"}, "requests": {"cpu": "50m", "memory": "50Mi"}},
                        "securityContext": {"privileged": True},
                        "volumeMounts": [{"name": "device-plugin", "mountPath": "/device-plugin"},
                                         {"name": "dev", "mountPath": "/dev"},
                                         {"name": "nvidia", "mountPath": "/usr/local/nvidia"}],
                    }],
                    "volumes": [{"name": "device-plugin", "hostPath": {"path": "/var/lib/kubelet/device-plugins"}},
                                {"name": "dev", "hostPath": {"path": "/dev"}},
                                {"name": "nvidia", "hostPath": {"path": "/home/kubernetes/bin/nvidia",
                                                                "type": "Directory"}}],
                },
            },
        },
        "status": {"currentNumberScheduled": 0, "desiredNumberScheduled": 0, "numberMisscheduled": 0,
                   "numberReady": 0, "observedGeneration": 1, "updatedNumberScheduled": 0},
    }


def seed_kubernetes(kube: KubeStore) -> None:
    """What a new GKE Standard cluster's API server holds before anyone installs anything.

    Includes the GKE-managed GPU stack (the NVIDIA device plugin DaemonSet) and the PD CSI driver
    with the snapshot CRDs, but no VolumeSnapshotClass: GKE ships none.
    """
    for ns in ("default", "kube-system", "kube-public", "kube-node-lease"):
        kube.put({"apiVersion": "v1", "kind": "Namespace",
                  "metadata": {"name": ns, "labels": {"kubernetes.io/metadata.name": ns}},
                  "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}})
    group = "snapshot.storage.k8s.io"
    for plural, singular, kind, scope, short, status in (
            ("volumesnapshotclasses", "volumesnapshotclass", "VolumeSnapshotClass", "Cluster",
             ["vsclass", "vsclasses"], False),
            ("volumesnapshots", "volumesnapshot", "VolumeSnapshot", "Namespaced", ["vs"], True),
            ("volumesnapshotcontents", "volumesnapshotcontent", "VolumeSnapshotContent", "Cluster",
             ["vsc", "vscs"], True)):
        kube.put(_crd(group, plural, singular, kind, scope, short, status))
    kube.put(_storage_class("standard-rwo", "pd.csi.storage.gke.io", {"type": "pd-balanced"},
                            "WaitForFirstConsumer", True))
    kube.put(_storage_class("standard", "kubernetes.io/gce-pd", {"type": "pd-standard"}, "Immediate", False))
    kube.put(_storage_class("premium-rwo", "pd.csi.storage.gke.io", {"type": "pd-ssd"},
                            "WaitForFirstConsumer", False))
    kube.put({"apiVersion": "storage.k8s.io/v1", "kind": "CSIDriver",
              "metadata": {"name": "pd.csi.storage.gke.io",
                           "labels": {"addonmanager.kubernetes.io/mode": "Reconcile"}},
              "spec": {"attachRequired": True, "podInfoOnMount": False, "fsGroupPolicy": "ReadWriteOnceWithFSType",
                       "requiresRepublish": False, "storageCapacity": False, "seLinuxMount": False,
                       "volumeLifecycleModes": ["Persistent"]}})
    for name in DEVICE_PLUGINS:
        kube.put(_device_plugin_daemonset(name))


def finish_operation(sb: "Sandbox", op_key: str) -> None:
    gke = state(sb)
    rec = gke["operations"][op_key]
    op = rec["op"]
    if op["status"] == "DONE":
        return
    try:
        error = rec.get("error") or apply_effect(sb, rec)
    except ApiError as err:  # the target vanished or the patch no longer applies
        error = {"code": 9, "message": err.message}
    if error:
        rollback(sb, rec, error)
        op["error"] = error
        op["statusMessage"] = op["detail"] = error["message"]
        target = "clusterConditions" if rec["effect"]["kind"] == "create_cluster" else "nodepoolConditions"
        op[target] = [status_condition(error["message"])]
    op["status"] = "DONE"
    op["endTime"] = sb.clock.rfc3339()
    if op_key in gke["pending"]:
        gke["pending"].remove(op_key)
    cl = gke["clusters"].get(rec["cluster"])
    if cl is not None and not any(gke["operations"][k]["cluster"] == rec["cluster"] for k in gke["pending"]):
        if cl.get("status") in ("RECONCILING", "PROVISIONING"):
            cl["status"] = "RUNNING"
        for pool in cl.get("nodePools", []):
            if pool.get("status") == "RECONCILING":
                pool["status"] = "RUNNING"
        etag(cl)
    sb.store.mark()


def pool_of(sb: "Sandbox", rec: dict) -> tuple[dict, dict]:
    cl = state(sb)["clusters"].get(rec["cluster"])
    if cl is None:
        raise ApiError(404, f"Not found: {rec['cluster']}.")
    pool = find_pool(cl, rec["effect"]["pool"])
    if pool is None:
        raise ApiError(404, f"Not found: {rec['cluster']}/nodePools/{rec['effect']['pool']}.")
    return cl, pool


def apply_effect(sb: "Sandbox", rec: dict) -> dict | None:
    """Land an operation's effect; return a google.rpc.Status dict if it fails."""
    effect = rec["effect"]
    key = rec["cluster"]
    project = split_cluster_key(key)[0]
    kind = effect["kind"]
    if kind == "noop":  # an upgrade or repair whose changes the admin verb already made
        return None
    if kind == "create_cluster":
        cl = state(sb)["clusters"][key]
        for pool in cl["nodePools"]:
            problem = capacity_problem(sb, project, pool, initial_size(pool))
            if problem:
                return {"code": 8, "message": problem}
        cl["status"] = "RUNNING"
        kube_id = kube_id_for_gke(*split_cluster_key(key))
        cl["endpoint"] = sb.kube_endpoint(kube_id)
        cl["masterAuth"] = {"clusterCaCertificate": sb.kube_ca(kube_id)}
        kube = kube_of(sb, key)
        seed_kubernetes(kube)
        kube.data["meta"]["gitVersion"] = f"v{cl['currentMasterVersion']}"  # /version answers GKE's build
        for pool in cl["nodePools"]:
            pool["status"] = "RUNNING"
            etag(pool)
            resize_pool(sb, key, pool["name"], initial_size(pool))
        return None
    if kind == "create_pool":
        cl, pool = pool_of(sb, rec)
        problem = capacity_problem(sb, project, pool, initial_size(pool))
        if problem:
            return {"code": 8, "message": problem}
        pool["status"] = "RUNNING"
        etag(pool)
        resize_pool(sb, key, pool["name"], initial_size(pool))
        return None
    if kind == "update_cluster":
        apply_cluster_update(sb, key, effect["update"])
        return None
    if kind == "delete_cluster":
        gke = state(sb)
        gke["clusters"].pop(key, None)
        for k in [k for k in gke["internal"] if k.startswith(key + "/")]:
            gke["internal"].pop(k)
        sb.drop_kube(kube_id_for_gke(*split_cluster_key(key)))
        return None
    if kind == "delete_pool":
        cl, pool = pool_of(sb, rec)
        resize_pool(sb, key, pool["name"], 0)
        cl["nodePools"] = [p for p in cl["nodePools"] if p["name"] != pool["name"]]
        state(sb)["internal"].pop(f"{key}/nodePools/{pool['name']}", None)
        return None
    cl, pool = pool_of(sb, rec)
    if kind == "pool_patch":
        before = copy.deepcopy(pool)
        new = deep_merge(copy.deepcopy(pool), effect["patch"])
        for k, v in effect.get("replace", {}).items():
            target = new
            *path, last = k.split(".")
            for p in path:
                target = target.setdefault(p, {})
            if v in (None, [], {}):
                target.pop(last, None)
            else:
                target[last] = copy.deepcopy(v)
        new = canonical(container_v1.NodePool, new)
        pool.clear()
        pool.update(new)
        pool["status"] = "RECONCILING"
        etag(pool)
        if before.get("config") != pool.get("config") or before.get("version") != pool.get("version"):
            sync_nodes(sb, key, pool)
        if before.get("locations") != pool.get("locations"):
            resize_pool(sb, key, pool["name"], pool_size(sb, key, pool["name"]))
        return None
    if kind == "set_size":
        total = int(effect["count"]) * max(1, len(pool.get("locations", [])))
        problem = capacity_problem(sb, project, pool, total - pool_size(sb, key, pool["name"]))
        if problem:
            return {"code": 8, "message": problem}
        resize_pool(sb, key, pool["name"], total)
        return None
    raise ApiError(500, f"unknown operation effect {kind}")


def status_condition(message: str) -> dict:
    """A container/v1 StatusCondition for a failure message (GCE_STOCKOUT=1, GCE_QUOTA_EXCEEDED=3)."""
    code = "GCE_STOCKOUT" if "STOCKOUT" in message else "GCE_QUOTA_EXCEEDED" if "quota" in message.lower() else "UNKNOWN"
    return {"code": code, "message": message,
            "canonicalCode": "RESOURCE_EXHAUSTED" if code != "UNKNOWN" else "UNKNOWN"}


def rollback(sb: "Sandbox", rec: dict, error: dict) -> None:
    """What a failed operation leaves. A failed create leaves the cluster or pool in ERROR with the
    reason in `statusMessage` and `conditions` (cluster_service.proto: ERROR "Details can be found in
    the statusMessage field"; a pool GKE could not create stays in error state,
    hashicorp/terraform-provider-google#10121); a failed delete leaves it running."""
    gke = state(sb)
    kind = rec["effect"]["kind"]
    if kind in ("create_cluster", "create_pool"):
        cl = gke["clusters"].get(rec["cluster"])
        target = cl if kind == "create_cluster" else find_pool(cl or {}, rec["effect"]["pool"])
        if target is not None:
            target.update(status="ERROR", statusMessage=error["message"], conditions=[status_condition(error["message"])])
            if cl is not None and kind == "create_pool":
                cl["status"] = "RUNNING"  # the cluster itself is fine
                etag(cl)
    elif kind in ("delete_cluster", "delete_pool"):  # nothing was removed: it is running again
        cl = gke["clusters"].get(rec["cluster"])
        for obj in [cl, *((cl or {}).get("nodePools") or [])]:
            if obj is not None and obj.get("status") == "STOPPING":
                obj["status"] = "RUNNING"
        if kind == "delete_pool":
            gke["internal"].pop(f"{rec['cluster']}/nodePools/{rec['effect']['pool']}", None)


def reconcile(sb: "Sandbox") -> None:
    """Finish every operation that has run for 5 simulated seconds, or that a client polled while it
    was RUNNING (`due`, set by the API's get_operation). Cheap when nothing is pending."""
    gke = state(sb)
    if not gke["pending"]:
        return
    now = sb.clock.now()
    for op_key in list(gke["pending"]):
        rec = gke["operations"][op_key]
        if now < rec.get("holdUntil", 0):
            continue  # held busy (an upgrade or repair that takes its time)
        if (rec.get("due") or now - rec["start"] >= OP_DONE_AFTER_S) and not drain_blocked(sb, rec, now):
            finish_operation(sb, op_key)


# How long a node pool's drain waits on PodDisruptionBudgets before it goes on regardless: the
# graceful termination GKE allows per node, capped at one hour (`gcloud container node-pools delete`
# reference; NodePool.NodeDrainConfig.pdb_timeout_duration in container v1).
DRAIN_PDB_TIMEOUT_S = 3600.0


def drain_blocked(sb: "Sandbox", rec: dict, now: float) -> bool:
    """Simulation of a node pool deletion's drain: it cannot evict a pod that a PodDisruptionBudget with
    no disruption allowed protects (CloudNativePG's `minAvailable: 1` on a one-instance cluster), so the
    operation stays RUNNING until that budget is gone or the timeout passes (the seed's pause.sh clears
    PDBs first for this reason)."""
    if rec["effect"]["kind"] != "delete_pool" or now - rec["start"] >= DRAIN_PDB_TIMEOUT_S:
        return False
    if kube_id_for_gke(*split_cluster_key(rec["cluster"])) not in sb.store.section("kube"):
        return False  # a cluster whose API never came up has nothing to drain
    kube = kube_of(sb, rec["cluster"])
    nodes = {n["metadata"]["name"] for n in pool_nodes(kube, rec["effect"]["pool"])}
    closed = [b for b in kube.list_objects("policy", "poddisruptionbudgets") if allows_none(b)]
    return any((pod.get("spec") or {}).get("nodeName") in nodes and any(covers(b, pod) for b in closed)
               for pod in kube.list_objects("", "pods"))


# ClusterUpdate fields that land somewhere other than Cluster.<name without "desired">.
NETWORK_UPDATES = {"desiredDatapathProvider": "datapathProvider", "desiredDefaultSnatStatus": "defaultSnatStatus",
                    "desiredDnsConfig": "dnsConfig", "desiredGatewayApiConfig": "gatewayApiConfig",
                    "desiredPrivateIpv6GoogleAccess": "privateIpv6GoogleAccess",
                    "desiredL4ilbSubsettingConfig": "enableL4ilbSubsetting",
                    "desiredIntraNodeVisibilityConfig": "enableIntraNodeVisibility",
                    "desiredServiceExternalIpsConfig": "serviceExternalIpsConfig",
                    "desiredEnableFqdnNetworkPolicy": "enableFqdnNetworkPolicy",
                    "desiredEnableMultiNetworking": "enableMultiNetworking"}

CLUSTER_RENAMES = {"desiredClusterAutoscaling": "autoscaling", "desiredLocations": "locations"}


def apply_cluster_update(sb: "Sandbox", key: str, update: dict) -> None:
    cl = state(sb)["clusters"][key]
    fields = set(container_v1.Cluster.meta.fields)
    pool_id = update.get("desiredNodePoolId")
    pools = [p for p in cl.get("nodePools", []) if pool_id in (None, "", p["name"])]
    for field, value in update.items():
        if field in ("desiredNodePoolId", "etag"):
            continue
        if field == "desiredMasterVersion":
            cl["currentMasterVersion"] = resolve_version(value, "Master")
            kube_of(sb, key).data["meta"]["gitVersion"] = f"v{cl['currentMasterVersion']}"
        elif field == "desiredNodeVersion":
            version = resolve_version(value if value != "-" else cl["currentMasterVersion"], "Node")
            for pool in pools:
                pool["version"] = version
                sync_nodes(sb, key, pool)
            cl["currentNodeVersion"] = min(p.get("version", version) for p in cl["nodePools"])
        elif field == "desiredImageType":
            for pool in pools:
                pool.setdefault("config", {})["imageType"] = value
        elif field == "desiredNodePoolAutoscaling":
            for pool in pools:
                pool["autoscaling"] = validate_autoscaling(copy.deepcopy(value))
        elif field in NETWORK_UPDATES:
            inner = NETWORK_UPDATES[field]
            if isinstance(value, dict) and inner.startswith("enable") and "enabled" in value:
                value = value["enabled"]
            cl.setdefault("networkConfig", {})[inner] = value
        elif field == "desiredAddonsConfig":
            cl["addonsConfig"] = deep_merge(cl.get("addonsConfig", {}), value)
        else:
            target = CLUSTER_RENAMES.get(field) or (field[len("desired"):][:1].lower() + field[len("desired") + 1:])
            snake = re.sub(r"([A-Z])", r"_\1", target).lower()
            if snake in fields:
                cl[target] = copy.deepcopy(value)
    new = canonical(container_v1.Cluster, cl)
    cl.clear()
    cl.update(new)
    etag(cl)
