"""GKE, container v1 REST: clusters, node pools and long-running operations.

Simulation: no VM, control plane or instance group exists. A cluster is a JSON document in the
sandbox state (`gke` section), written and answered with the client library's own message types
(`container_v1.Cluster`, `NodePool`, `Operation`), so the wire format is Google's: enum names for
plain JSON clients, integers for `$alt=json;enum-encoding=int`, zero values omitted, int64 as
strings. What GKE fills in by itself is filled in here too (selfLink, status, endpoint, versions,
instance group URLs, default image and disk type, auto-upgrade/auto-repair, pod CIDR sizes, ...).

Simulated behaviour, each modelled on what GKE does:

- Every mutating call returns an `Operation` that goes PENDING -> RUNNING -> DONE: each
  `get_operation` advances it one step, and it is DONE at the latest 5 simulated seconds after it
  started. Its effect (cluster or pool RUNNING, an update applied, nodes created) lands at DONE;
  a failure is reported in `op.error` (google.rpc.Status) with status DONE.
- While an operation runs, the cluster is PROVISIONING (creation) or RECONCILING, and a second
  mutating call on that cluster fails with 400 FAILED_PRECONDITION ("Cluster is running
  incompatible operation ...").
- A cluster that reaches RUNNING gets a sandbox Kubernetes API seeded with what GKE ships
  (namespaces, StorageClasses, the PD CSI driver, the snapshot CRDs but no VolumeSnapshotClass,
  the GKE-managed NVIDIA device plugin DaemonSet).
- Node pools produce Node objects in that API (`resize_pool`), labelled, tainted and sized the
  way GKE's nodes are.
- Injected faults `quota` and `stockout` on a creating/updating call, quotas (`compute.py`) and
  stockouts (`POST /sandbox/gke/stockouts`) make the operation end DONE with an error, and the
  pool (or cluster) is not created. A cluster whose creation fails is rolled back rather than left
  in ERROR, so a sandbox user can simply try again.

The simulated cluster autoscaler (in `controllers.py`) drives node counts through
`node_pools`, `gpu_nodes_allowed` and `resize_pool`.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import uuid
from typing import TYPE_CHECKING, Any, Iterable

from google.cloud import container_v1
from google.protobuf import json_format

from . import compute, serviceusage
from .core import ApiError, kube_id_for_gke
from .http import Request, Route, emit_google, fault_error, parse_google_body
from .kubestore import BUILTIN_TYPES, KubeStore

if TYPE_CHECKING:
    from .app import Sandbox

# ---- constants ------------------------------------------------------------------------------------
DEFAULT_VERSION = "1.33.5-gke.1000"
VALID_VERSIONS = ("1.34.1-gke.1100", "1.33.5-gke.1000", "1.32.9-gke.1100")
OP_DONE_AFTER_S = 5.0
LINK = "https://container.googleapis.com/v1"
COMPUTE_LINK = "https://www.googleapis.com/compute/v1"
POOL_LABEL = "cloud.google.com/gke-nodepool"
ACCEL_LABEL = "cloud.google.com/gke-accelerator"
GPU_RESOURCE = "nvidia.com/gpu"
GPU_TAINT = {"key": GPU_RESOURCE, "value": "present", "effect": "NoSchedule"}
DEVICE_PLUGIN = "nvidia-gpu-device-plugin"
RUNNING_STATES = ("RUNNING", "RECONCILING")
# base64 of a PEM-shaped placeholder: the sandbox's Kubernetes API is plain HTTP (use its kubeconfig).
FAKE_CA = "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCnNhbmRib3gKLS0tLS1FTkQgQ0VSVElGSUNBVEUtLS0tLQo="
NAME_RE = re.compile(r"^[a-z]([-a-z0-9]{0,38}[a-z0-9])?$")
ZONE_RE = re.compile(r"^([a-z]+-[a-z]+\d+)-[a-z]$")

DEFAULT_OAUTH_SCOPES = [
    "https://www.googleapis.com/auth/devstorage.read_only",
    "https://www.googleapis.com/auth/logging.write",
    "https://www.googleapis.com/auth/monitoring",
    "https://www.googleapis.com/auth/service.management.readonly",
    "https://www.googleapis.com/auth/servicecontrol",
    "https://www.googleapis.com/auth/trace.append",
]

# vCPUs and memory of the machine types the sandbox knows by name; others follow their family's
# ratio (`_machine_shape`), unknown ones get 4 vCPUs / 16Gi.
MACHINE_TYPES: dict[str, tuple[int, str]] = {
    "e2-medium": (2, "4Gi"),
    "e2-standard-2": (2, "8Gi"),
    "e2-standard-4": (4, "16Gi"),
    "e2-standard-8": (8, "32Gi"),
    "e2-standard-16": (16, "64Gi"),
    "n1-standard-4": (4, "15Gi"),
    "n1-standard-8": (8, "30Gi"),
    "g2-standard-4": (4, "16Gi"),
    "g2-standard-8": (8, "32Gi"),
    "g2-standard-12": (12, "48Gi"),
    "g2-standard-16": (16, "64Gi"),
    "g2-standard-24": (24, "96Gi"),
    "g2-standard-32": (32, "128Gi"),
    "g2-standard-48": (48, "192Gi"),
    "g2-standard-96": (96, "384Gi"),
}
_FAMILY_GIB_PER_CPU = {"e2-standard": 4, "e2-highmem": 8, "e2-highcpu": 1, "n2-standard": 4, "n2-highmem": 8,
                       "n1-standard": 3.75, "n1-highmem": 6.5, "g2-standard": 4, "a2-highgpu": 85 / 12}

# Accelerator-optimized families carry their GPUs: GKE attaches them without being asked and refuses
# another accelerator type. (G2: https://cloud.google.com/compute/docs/gpus#l4-gpus)
G2_GPUS = {"g2-standard-4": 1, "g2-standard-8": 1, "g2-standard-12": 1, "g2-standard-16": 1,
           "g2-standard-24": 2, "g2-standard-32": 1, "g2-standard-48": 4, "g2-standard-96": 8}
ACCEL_FAMILIES = {"nvidia-l4": ("g2",), "nvidia-tesla-t4": ("n1",), "nvidia-tesla-p4": ("n1",),
                  "nvidia-tesla-v100": ("n1",), "nvidia-tesla-p100": ("n1",), "nvidia-tesla-a100": ("a2",),
                  "nvidia-a100-80gb": ("a2",), "nvidia-h100-80gb": ("a3",)}

TAINT_EFFECTS = {"NO_SCHEDULE": "NoSchedule", "PREFER_NO_SCHEDULE": "PreferNoSchedule", "NO_EXECUTE": "NoExecute"}

RT_NODE = next(rt for rt in BUILTIN_TYPES if rt.plural == "nodes")
RT_POD = next(rt for rt in BUILTIN_TYPES if rt.plural == "pods")
RT_DAEMONSET = next(rt for rt in BUILTIN_TYPES if rt.plural == "daemonsets")


# ---- small helpers ----------------------------------------------------------------------------------
def _state(sb: "Sandbox") -> dict:
    gke = sb.store.section("gke")
    if "clusters" not in gke:
        gke.update({"clusters": {}, "operations": {}, "pending": [], "stockouts": [], "internal": {}, "seq": 0})
    return gke


def _hash(*parts: str, n: int = 8) -> str:
    return hashlib.sha1("/".join(parts).encode()).hexdigest()[:n]


def _region_of(location: str) -> str:
    m = ZONE_RE.match(location)
    return m.group(1) if m else location


def _canonical(msg_type, data: dict) -> dict:
    """Round-trip through the message type (validates a drift patch, normalises int64 as strings)."""
    pb = msg_type.pb()()
    try:
        json_format.ParseDict(data, pb)
    except json_format.ParseError as exc:
        raise ApiError(400, f"invalid {msg_type.__name__}: {exc}") from None
    return json_format.MessageToDict(pb)


def _etag(obj: dict) -> None:
    obj.pop("etag", None)
    obj["etag"] = hashlib.sha1(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def _deep_merge(base: dict, patch: dict) -> dict:
    """JSON merge patch (RFC 7386): dicts merge, `null` deletes, anything else replaces."""
    for k, v in patch.items():
        if v is None:
            base.pop(k, None)
        elif isinstance(v, dict) and isinstance(base.get(k), dict):
            _deep_merge(base[k], v)
        else:
            base[k] = copy.deepcopy(v)
    return base


def _not_found(name: str) -> ApiError:
    return ApiError(404, f"Not found: {name}.")


def _cluster_key(project: str, location: str, cluster: str) -> str:
    return f"projects/{project}/locations/{location}/clusters/{cluster}"


def _split_cluster_key(key: str) -> tuple[str, str, str]:
    parts = key.split("/")
    return parts[1], parts[3], parts[5]


def _resolve_cluster_key(sb: "Sandbox", cluster_name: str) -> str:
    """Full resource name, kube cluster id (`gke_P_L_C`) or bare cluster name -> stored key."""
    clusters = _state(sb)["clusters"]
    if cluster_name in clusters:
        return cluster_name
    matches = [k for k in clusters
               if kube_id_for_gke(*_split_cluster_key(k)) == cluster_name or k.rsplit("/", 1)[-1] == cluster_name]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise _not_found(cluster_name)
    raise ApiError(400, f"cluster name {cluster_name!r} is ambiguous: {', '.join(sorted(matches))}")


def _find_pool(cluster: dict, pool_name: str) -> dict | None:
    for pool in cluster.get("nodePools", []):
        if pool["name"] == pool_name:
            return pool
    return None


def _lookup(sb: "Sandbox", project: str, location: str, cluster: str, pool: str | None = None):
    gke = _state(sb)
    key = _cluster_key(project, location, cluster)
    cl = gke["clusters"].get(key)
    if cl is None:
        raise _not_found(key)
    if pool is None:
        return key, cl, None
    np = _find_pool(cl, pool)
    if np is None:
        raise _not_found(f"{key}/nodePools/{pool}")
    return key, cl, np


def _req_loc(req: Request) -> tuple[str, str]:
    return req.match["project"], req.match["location"]


def _take_fault(req: Request) -> str | None:
    """Consume an injected `quota`/`stockout` fault: this handler reports it in the operation."""
    kind, req.fault = req.fault, None
    return kind


# ---- machines, accelerators and nodes ---------------------------------------------------------------
def _machine_shape(machine_type: str) -> tuple[int, str]:
    if machine_type in MACHINE_TYPES:
        return MACHINE_TYPES[machine_type]
    family, _, n = machine_type.rpartition("-")
    if family in _FAMILY_GIB_PER_CPU and n.isdigit():
        cpus = int(n)
        return cpus, f"{int(cpus * _FAMILY_GIB_PER_CPU[family] * 1024)}Mi"
    return 4, "16Gi"


def _to_ki(quantity: str) -> int:
    units = {"Ki": 1, "Mi": 1024, "Gi": 1024 ** 2}
    for suffix, mult in units.items():
        if quantity.endswith(suffix):
            return int(float(quantity[: -len(suffix)]) * mult)
    return int(quantity) // 1024


def _allocatable(cpus: int, memory: str) -> tuple[str, str]:
    """Allocatable after GKE's kube-reserved and eviction threshold.

    https://cloud.google.com/kubernetes-engine/docs/concepts/plan-node-sizes
    """
    reserved_m = 60 + (10 if cpus > 1 else 0) + 5 * max(0, min(cpus, 4) - 2) + int(2.5 * max(0, cpus - 4))
    gib = _to_ki(memory) / 1024 ** 2
    tiers = ((4, 0.25), (4, 0.20), (8, 0.10), (112, 0.06), (float("inf"), 0.02))
    left, reserved_gib = gib, 0.0
    for size, frac in tiers:
        take = min(left, size)
        reserved_gib += take * frac
        left -= take
    mem_ki = _to_ki(memory) - int(reserved_gib * 1024 ** 2) - 100 * 1024
    return f"{cpus * 1000 - reserved_m}m", f"{mem_ki}Ki"


def gpu_quota_metric(accelerator_type: str, spot: bool = False) -> str:
    """Compute quota metric of an accelerator type: nvidia-l4 -> NVIDIA_L4_GPUS, nvidia-tesla-t4 -> NVIDIA_T4_GPUS."""
    core = accelerator_type.lower().removeprefix("nvidia-").removeprefix("tesla-")
    metric = f"NVIDIA_{core.upper().replace('-', '_')}_GPUS"
    return f"PREEMPTIBLE_{metric}" if spot else metric


def _accelerator(pool: dict) -> tuple[str | None, int]:
    accels = pool.get("config", {}).get("accelerators") or []
    if not accels:
        return None, 0
    return accels[0].get("acceleratorType"), sum(int(a.get("acceleratorCount", 0)) for a in accels)


def _is_spot(pool: dict) -> bool:
    cfg = pool.get("config", {})
    return bool(cfg.get("spot") or cfg.get("preemptible"))


def _k8s_taints(pool: dict) -> list[dict]:
    out = []
    for t in pool.get("config", {}).get("taints", []):
        taint = {"key": t.get("key", ""), "effect": TAINT_EFFECTS.get(t.get("effect", ""), t.get("effect", ""))}
        if t.get("value"):
            taint["value"] = t["value"]
        out.append(taint)
    if _accelerator(pool)[0]:
        # GKE taints GPU nodes itself (https://cloud.google.com/kubernetes-engine/docs/how-to/gpus).
        out.append(dict(GPU_TAINT))
    return out


def _node_labels(project: str, cluster_name: str, pool: dict, zone: str, node_name: str) -> dict:
    cfg = pool.get("config", {})
    machine = cfg.get("machineType", "e2-medium")
    region = _region_of(zone)
    labels = {
        "beta.kubernetes.io/arch": "amd64",
        "beta.kubernetes.io/instance-type": machine,
        "beta.kubernetes.io/os": "linux",
        "cloud.google.com/gke-boot-disk": cfg.get("diskType", "pd-balanced"),
        "cloud.google.com/gke-container-runtime": "containerd",
        "cloud.google.com/gke-cpu-scaling-level": str(_machine_shape(machine)[0]),
        "cloud.google.com/gke-logging-variant": "DEFAULT",
        "cloud.google.com/gke-max-pods-per-node": str(pool.get("maxPodsConstraint", {}).get("maxPodsPerNode", "110")),
        "cloud.google.com/gke-nodepool": pool["name"],
        "cloud.google.com/gke-os-distribution": "cos",
        "cloud.google.com/gke-provisioning": "spot" if _is_spot(pool) else "standard",
        "cloud.google.com/machine-family": machine.split("-")[0],
        "cloud.google.com/private-node": "false",
        "failure-domain.beta.kubernetes.io/region": region,
        "failure-domain.beta.kubernetes.io/zone": zone,
        "kubernetes.io/arch": "amd64",
        "kubernetes.io/hostname": node_name,
        "kubernetes.io/os": "linux",
        "node.kubernetes.io/instance-type": machine,
        "topology.gke.io/zone": zone,
        "topology.kubernetes.io/region": region,
        "topology.kubernetes.io/zone": zone,
    }
    if _is_spot(pool):
        labels["cloud.google.com/gke-spot"] = "true"
    accel, _ = _accelerator(pool)
    if accel:
        labels[ACCEL_LABEL] = accel
        labels["cloud.google.com/gke-gpu"] = "true"
        drv = (cfg.get("accelerators", [{}])[0].get("gpuDriverInstallationConfig", {}) or {}).get("gpuDriverVersion")
        if drv and drv != "INSTALLATION_DISABLED":
            labels["cloud.google.com/gke-gpu-driver-version"] = drv.lower()
    labels.update(cfg.get("labels", {}))
    return labels


def _node_capacity(pool: dict) -> tuple[dict, dict]:
    cfg = pool.get("config", {})
    cpus, memory = _machine_shape(cfg.get("machineType", "e2-medium"))
    pods = str(pool.get("maxPodsConstraint", {}).get("maxPodsPerNode", "110"))
    disk_gb = int(cfg.get("diskSizeGb", 100))
    alloc_cpu, alloc_mem = _allocatable(cpus, memory)
    capacity = {"cpu": str(cpus), "ephemeral-storage": f"{disk_gb * 1024 * 1024 - 2 * 1024 * 1024}Ki",
                "hugepages-1Gi": "0", "hugepages-2Mi": "0", "memory": f"{_to_ki(memory)}Ki", "pods": pods}
    allocatable = {**capacity, "cpu": alloc_cpu, "memory": alloc_mem,
                   "ephemeral-storage": str(int(disk_gb * 0.85 * 1024 ** 3))}
    accel, count = _accelerator(pool)
    if accel:
        capacity[GPU_RESOURCE] = allocatable[GPU_RESOURCE] = str(count)
    return capacity, allocatable


def _node_object(sb: "Sandbox", cluster_key: str, cluster: dict, pool: dict, zone: str, name: str,
                 ip: str) -> dict:
    project, _, cluster_name = _split_cluster_key(cluster_key)
    capacity, allocatable = _node_capacity(pool)
    now = sb.clock.rfc3339()
    version = pool.get("version", cluster.get("currentNodeVersion", DEFAULT_VERSION))
    conditions = [
        {"type": t, "status": "False", "reason": r, "message": m, "lastHeartbeatTime": now,
         "lastTransitionTime": now}
        for t, r, m in (("MemoryPressure", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
                        ("DiskPressure", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                        ("PIDPressure", "KubeletHasSufficientPID", "kubelet has sufficient PID available"))
    ]
    conditions.append({"type": "Ready", "status": "True", "reason": "KubeletReady",
                       "message": "kubelet is posting ready status", "lastHeartbeatTime": now,
                       "lastTransitionTime": now})
    uid = _hash(cluster_key, name, n=32)
    spec_extra = {"taints": _k8s_taints(pool)} if _k8s_taints(pool) else {}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": _node_labels(project, cluster_name, pool, zone, name),
            "annotations": {
                "container.googleapis.com/instance_id": str(int(uid[:15], 16)),
                "node.alpha.kubernetes.io/ttl": "0",
                "node.gke.io/last-applied-node-labels": ",".join(
                    f"{k}={v}" for k, v in sorted(pool.get("config", {}).get("labels", {}).items())),
                "volumes.kubernetes.io/controller-managed-attach-detach": "true",
            },
        },
        "spec": {
            "podCIDR": f"10.{64 + int(ip.split('.')[2]) % 4}.{int(ip.split('.')[3])}.0/24",
            "podCIDRs": [f"10.{64 + int(ip.split('.')[2]) % 4}.{int(ip.split('.')[3])}.0/24"],
            "providerID": f"gce://{project}/{zone}/{name}",
            **spec_extra,
        },
        "status": {
            "addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}],
            "allocatable": allocatable,
            "capacity": capacity,
            "conditions": conditions,
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "architecture": "amd64",
                "bootID": str(uuid.UUID(uid)),
                "containerRuntimeVersion": "containerd://1.7.27",
                "kernelVersion": "6.6.97+",
                "kubeProxyVersion": f"v{version}",
                "kubeletVersion": f"v{version}",
                "machineID": _hash(name, "machine", n=32),
                "operatingSystem": "linux",
                "osImage": "Container-Optimized OS from Google",
                "systemUUID": str(uuid.UUID(_hash(name, "system", n=32))),
            },
        },
    }


def _kube(sb: "Sandbox", cluster_key: str) -> KubeStore:
    return sb.kube(kube_id_for_gke(*_split_cluster_key(cluster_key)))


def _pool_nodes(kube: KubeStore, pool_name: str) -> list[dict]:
    return [n for n in kube.list_objects("", "nodes")
            if n["metadata"].get("labels", {}).get(POOL_LABEL) == pool_name]


def _next_ip(sb: "Sandbox") -> str:
    gke = _state(sb)
    gke["seq"] += 1
    n = gke["seq"]
    return f"10.128.{(n // 250) % 250}.{n % 250 + 2}"


def _update_device_plugin(kube: KubeStore) -> None:
    ds = kube.get_object("apps", "daemonsets", "kube-system", DEVICE_PLUGIN)
    if ds is None:
        return
    n = sum(1 for node in kube.list_objects("", "nodes") if ACCEL_LABEL in node["metadata"].get("labels", {}))
    status = {"currentNumberScheduled": n, "desiredNumberScheduled": n, "numberAvailable": n,
              "numberMisscheduled": 0, "numberReady": n, "observedGeneration": 1, "updatedNumberScheduled": n}
    if n == 0:
        status.pop("numberAvailable")
    if ds.get("status") != status:
        kube.replace(RT_DAEMONSET, {**ds, "status": status}, check_rv=False)


def _sync_cluster_counts(sb: "Sandbox", cluster_key: str) -> None:
    cl = _state(sb)["clusters"].get(cluster_key)
    if cl is None:
        return
    kube = _kube(sb, cluster_key)
    pool_names = {p["name"] for p in cl.get("nodePools", [])}
    count = sum(1 for n in kube.list_objects("", "nodes")
                if n["metadata"].get("labels", {}).get(POOL_LABEL) in pool_names)
    if cl.get("currentNodeCount", 0) != count:
        if count:
            cl["currentNodeCount"] = count
        else:
            cl.pop("currentNodeCount", None)
        sb.store.mark()
    _update_device_plugin(kube)


def _sync_nodes(sb: "Sandbox", cluster_key: str, pool: dict) -> None:
    """Re-apply a pool's labels, taints, shape and version to its existing nodes (as GKE propagates them).

    Labels and taints that someone else put on a node (kubectl, another controller) are kept;
    those this pool set before and no longer sets are removed.
    """
    cl = _state(sb)["clusters"][cluster_key]
    kube = _kube(sb, cluster_key)
    internal = _state(sb)["internal"].setdefault(f"{cluster_key}/nodePools/{pool['name']}", {})
    old_labels = set(internal.get("labels", []))
    old_taints = {(t["key"], t["effect"]) for t in internal.get("taints", [])}
    for node in _pool_nodes(kube, pool["name"]):
        meta = node["metadata"]
        zone = meta["labels"].get("topology.kubernetes.io/zone", pool["locations"][0])
        ip = next((a["address"] for a in node["status"].get("addresses", []) if a["type"] == "InternalIP"),
                  "10.128.0.2")
        fresh = _node_object(sb, cluster_key, cl, pool, zone, meta["name"], ip)
        labels = {k: v for k, v in meta.get("labels", {}).items() if k not in old_labels}
        labels.update(fresh["metadata"]["labels"])
        managed = {(t["key"], t["effect"]) for t in fresh["spec"].get("taints", [])}
        taints = [t for t in node["spec"].get("taints", [])
                  if (t["key"], t["effect"]) not in old_taints and (t["key"], t["effect"]) not in managed]
        taints = fresh["spec"].get("taints", []) + taints
        new = copy.deepcopy(node)
        new["metadata"]["labels"] = labels
        new["metadata"]["annotations"] = {**meta.get("annotations", {}), **fresh["metadata"]["annotations"]}
        new["spec"]["taints"] = taints
        if not taints:
            new["spec"].pop("taints", None)
        new["status"]["capacity"] = fresh["status"]["capacity"]
        new["status"]["allocatable"] = fresh["status"]["allocatable"]
        new["status"]["nodeInfo"] = fresh["status"]["nodeInfo"]
        kube.replace(RT_NODE, new, check_rv=False)
    sample = _node_object(sb, cluster_key, cl, pool, pool["locations"][0], "template", "10.128.0.2")
    internal["labels"] = sorted(sample["metadata"]["labels"])
    internal["taints"] = sample["spec"].get("taints", [])
    sb.store.mark()
    _sync_cluster_counts(sb, cluster_key)


# ---- public API for the simulated controllers ------------------------------------------------------
def cluster_names(sb: "Sandbox") -> list[str]:
    """Full resource names (`projects/P/locations/L/clusters/C`) of every simulated GKE cluster."""
    return sorted(_state(sb)["clusters"])


def cluster_for_kube(sb: "Sandbox", kube_id: str) -> str | None:
    """The GKE cluster (full resource name) behind a sandbox kube cluster id, or None if not a GKE one."""
    for key in _state(sb)["clusters"]:
        if kube_id_for_gke(*_split_cluster_key(key)) == kube_id:
            return key
    return None


def node_pools(sb: "Sandbox") -> list[tuple[str, dict]]:
    """Every node pool of every RUNNING (or RECONCILING) cluster whose pool is RUNNING/RECONCILING.

    Returns `(cluster_name, pool)` pairs: `cluster_name` is the full resource name
    `projects/P/locations/L/clusters/C` (pass it back to `resize_pool`, `pool_size`,
    `gpu_nodes_allowed`; `kube_id_for_gke` gives its Kubernetes cluster id), `pool` a deep copy of
    the stored NodePool JSON exactly as `get_node_pool` would show it with enum names (camelCase,
    int64 as strings: read `int(pool["autoscaling"].get("maxNodeCount", 0))`). Autoscaling limits
    `minNodeCount`/`maxNodeCount` are per zone (times `len(pool["locations"])`); `totalMinNodeCount`/
    `totalMaxNodeCount` are pool-wide. Finishes operations whose time is up first.
    """
    reconcile(sb)
    out = []
    for key, cl in sorted(_state(sb)["clusters"].items()):
        if cl.get("status") not in RUNNING_STATES:
            continue
        for pool in cl.get("nodePools", []):
            if pool.get("status") in RUNNING_STATES:
                out.append((key, copy.deepcopy(pool)))
    return out


def pool_size(sb: "Sandbox", cluster_name: str, pool_name: str) -> int:
    """Current number of nodes of a pool (all zones), counted from its Node objects."""
    key = _resolve_cluster_key(sb, cluster_name)
    return len(_pool_nodes(_kube(sb, key), pool_name))


def pool_node_template(sb: "Sandbox", cluster_name: str, pool_name: str) -> dict:
    """The Node a scale-up of this pool would add (labels, taints, allocatable), not stored.

    The cluster autoscaler decides whether a pending pod would fit a pool from such a template node.
    """
    key = _resolve_cluster_key(sb, cluster_name)
    cl = _state(sb)["clusters"][key]
    pool = _find_pool(cl, pool_name)
    if pool is None:
        raise _not_found(f"{key}/nodePools/{pool_name}")
    name = f"template-{pool_name}"
    return _node_object(sb, key, cl, pool, pool["locations"][0], name, "10.128.0.2")


def resource_usage(sb: "Sandbox", project: str) -> dict:
    """Compute quota usage of a project's simulated GKE nodes.

    Returns `{"regions": {region: {metric: n}}, "global": {metric: n}}`: per node its vCPUs (CPUS,
    or PREEMPTIBLE_CPUS for spot/preemptible pools), its accelerators (NVIDIA_<TYPE>_GPUS or
    PREEMPTIBLE_NVIDIA_<TYPE>_GPUS), INSTANCES, its boot disk (SSD_TOTAL_GB for pd-balanced/pd-ssd,
    DISKS_TOTAL_GB for pd-standard); project-wide GPUS_ALL_REGIONS and CPUS_ALL_REGIONS.
    """
    regions: dict[str, dict[str, float]] = {}
    glob: dict[str, float] = {}
    kube_ids = set(sb.kube_cluster_ids())
    for key, cl in _state(sb)["clusters"].items():
        p, location, name = _split_cluster_key(key)
        if p != project or kube_id_for_gke(p, location, name) not in kube_ids:
            continue
        pools = {pool["name"]: pool for pool in cl.get("nodePools", [])}
        counts: dict[tuple[str, str], int] = {}
        for node in _kube(sb, key).list_objects("", "nodes"):
            labels = node["metadata"].get("labels", {})
            pool_name = labels.get(POOL_LABEL)
            if pool_name in pools:
                zone = labels.get("topology.kubernetes.io/zone", cl["location"])
                counts[(pool_name, zone)] = counts.get((pool_name, zone), 0) + 1
        for (pool_name, zone), n in counts.items():
            pool = pools[pool_name]
            cfg = pool.get("config", {})
            region = _region_of(zone)
            bucket = regions.setdefault(region, {})
            spot = _is_spot(pool)
            cpus = _machine_shape(cfg.get("machineType", "e2-medium"))[0] * n
            accel, per_node = _accelerator(pool)
            disk_metric = "DISKS_TOTAL_GB" if cfg.get("diskType") == "pd-standard" else "SSD_TOTAL_GB"
            adds = [("PREEMPTIBLE_CPUS" if spot else "CPUS", cpus), ("INSTANCES", n),
                    (disk_metric, int(cfg.get("diskSizeGb", 100)) * n)]
            if accel:
                adds.append((gpu_quota_metric(accel, spot), per_node * n))
                glob["GPUS_ALL_REGIONS"] = glob.get("GPUS_ALL_REGIONS", 0.0) + per_node * n
            for metric, amount in adds:
                bucket[metric] = bucket.get(metric, 0.0) + amount
            glob["CPUS_ALL_REGIONS"] = glob.get("CPUS_ALL_REGIONS", 0.0) + cpus
    return {"regions": regions, "global": glob}


def _pool_limits(pool: dict) -> tuple[int, int] | None:
    """(min, max) total nodes the autoscaler keeps the pool within, or None if autoscaling is off."""
    auto = pool.get("autoscaling") or {}
    if not auto.get("enabled"):
        return None
    zones = max(1, len(pool.get("locations", [])))
    if "totalMinNodeCount" in auto or "totalMaxNodeCount" in auto:
        return int(auto.get("totalMinNodeCount", 0)), int(auto.get("totalMaxNodeCount", 0))
    return int(auto.get("minNodeCount", 0)) * zones, int(auto.get("maxNodeCount", 0)) * zones


def _stocked_out(sb: "Sandbox", zone: str, accel: str | None) -> bool:
    return bool(accel) and any(s["zone"] == zone and s["acceleratorType"] == accel
                               for s in _state(sb)["stockouts"])


def _stockout_message(project: str, zone: str, accel: str, machine: str) -> str:
    return (f"GCE_STOCKOUT: ZONE_RESOURCE_POOL_EXHAUSTED: The zone 'projects/{project}/zones/{zone}' does not "
            f"have enough resources available to fulfill the request ({accel} on {machine}). Try a different "
            f"zone, or try again later.")


def _quota_message(project: str, metric: str, need: float, limit: float, usage: float, regional: bool) -> str:
    avail = max(0.0, limit - usage)
    scope = "regional " if regional else ""
    return (f"Insufficient {scope}quota to satisfy request: resource \"{metric}\": request requires "
            f"'{float(need)}' and is short '{float(need - avail)}'. project has a quota of '{float(limit)}' with "
            f"'{float(avail)}' available. View and manage quotas at "
            f"https://console.cloud.google.com/iam-admin/quotas?usage=USED&project={project}.")


def _capacity_problem(sb: "Sandbox", project: str, pool: dict, extra: int) -> str | None:
    """Why `extra` more nodes of this pool cannot be created now (stockout, quota), or None."""
    if extra <= 0:
        return None
    cfg = pool.get("config", {})
    accel, per_node = _accelerator(pool)
    zones = pool.get("locations", [])
    if accel:
        if zones and all(_stocked_out(sb, z, accel) for z in zones):
            return _stockout_message(project, zones[0], accel, cfg.get("machineType", ""))
    region = _region_of(zones[0]) if zones else None
    spot = _is_spot(pool)
    cpus = _machine_shape(cfg.get("machineType", "e2-medium"))[0]
    needs: list[tuple[str | None, str, int]] = [(region, "PREEMPTIBLE_CPUS" if spot else "CPUS", cpus * extra),
                                                (None, "CPUS_ALL_REGIONS", cpus * extra)]
    if accel:
        needs[:0] = [(region, gpu_quota_metric(accel, spot), per_node * extra),
                     (None, "GPUS_ALL_REGIONS", per_node * extra)]
    for where, metric, need in needs:
        limit, usage = compute.quota(sb, project, where, metric)
        if usage + need > limit:
            return _quota_message(project, metric, need, limit, usage, where is not None)
    return None


def gpu_nodes_allowed(sb: "Sandbox", cluster_name: str, pool_name: str, extra: int) -> tuple[bool, str]:
    """May the cluster autoscaler change this pool by `extra` nodes now? Returns (allowed, reason).

    `cluster_name` is a full resource name (`projects/P/locations/L/clusters/C`, as `node_pools`
    returns it), a kube cluster id (`gke_P_L_C`) or a bare cluster name. `extra` > 0 asks about a
    scale-up by that many nodes, `extra` < 0 about removing that many. Checked, in the order the
    cluster-autoscaler hits them:

    - the pool exists, is RUNNING (or RECONCILING) and has autoscaling enabled (the autoscaler never
      touches a pool without it);
    - size limits: scale-up stays within the pool's max (`maxNodeCount` per zone times its zones,
      or `totalMaxNodeCount`), scale-down stays at or above its min (same rule);
    - for scale-ups only, a stockout injected with `POST /sandbox/gke/stockouts` for the pool's
      accelerator in every one of its zones ("GCE_STOCKOUT: ZONE_RESOURCE_POOL_EXHAUSTED ...");
    - for scale-ups only, Compute quota (`compute.quota`): the regional accelerator metric
      (`NVIDIA_L4_GPUS`, `PREEMPTIBLE_...` for spot pools), `GPUS_ALL_REGIONS`, regional `CPUS`
      (or `PREEMPTIBLE_CPUS`) and `CPUS_ALL_REGIONS`, usage counted from the live simulated nodes.

    The reason is one sentence a pod event or a check can show as is (for a refusal it starts with
    what failed: "max node group size reached", "min node group size reached", "GCE_STOCKOUT",
    "Insufficient regional quota", ...). This reads only; `resize_pool` makes the change.
    """
    try:
        key = _resolve_cluster_key(sb, cluster_name)
    except ApiError as err:
        return False, f"cluster {cluster_name} not found ({err.message})"
    cl = _state(sb)["clusters"][key]
    pool = _find_pool(cl, pool_name)
    if pool is None:
        return False, f"node pool {pool_name} not found in {key}"
    if cl.get("status") not in RUNNING_STATES or pool.get("status") not in RUNNING_STATES:
        return False, (f"node pool {pool_name} is {pool.get('status', 'STATUS_UNSPECIFIED')} in cluster "
                       f"{cl.get('status', 'STATUS_UNSPECIFIED')}: not ready for scaling")
    limits = _pool_limits(pool)
    if limits is None:
        return False, f"autoscaling is disabled on node pool {pool_name}"
    lo, hi = limits
    current = pool_size(sb, key, pool_name)
    if extra > 0 and current + extra > hi:
        return False, (f"max node group size reached: node pool {pool_name} has {current} node(s), "
                       f"its autoscaling max is {hi}")
    if extra < 0 and current + extra < lo:
        return False, (f"min node group size reached: node pool {pool_name} has {current} node(s), "
                       f"its autoscaling min is {lo}")
    problem = _capacity_problem(sb, _split_cluster_key(key)[0], pool, extra)
    if problem:
        return False, problem
    return True, (f"node pool {pool_name} can go from {current} to {current + extra} node(s) "
                  f"(autoscaling {lo}..{hi})")


def resize_pool(sb: "Sandbox", cluster_name: str, pool_name: str, count: int,
                prefer_remove: Iterable[str] = ()) -> list[str]:
    """Set a pool's current size to `count` nodes (all zones together); returns its node names.

    Creates Node objects the way GKE names and labels them (new nodes go to the pool's zone with
    the fewest nodes) or deletes nodes: first those named in `prefer_remove`, then nodes no pod is
    bound to, then the newest. Pods bound to a deleted node are left for the kube side to collect.
    It checks neither limits nor quota (ask `gpu_nodes_allowed` first) and creates no operation:
    it is what the managed instance group does when the autoscaler or an operation resizes it.
    """
    key = _resolve_cluster_key(sb, cluster_name)
    cl = _state(sb)["clusters"][key]
    pool = _find_pool(cl, pool_name)
    if pool is None:
        raise _not_found(f"{key}/nodePools/{pool_name}")
    if count < 0:
        raise ApiError(400, f"node count must be >= 0, got {count}")
    kube = _kube(sb, key)
    nodes = _pool_nodes(kube, pool_name)
    zones = pool.get("locations") or [cl["location"]]
    if count > len(nodes):
        per_zone = {z: 0 for z in zones}
        for n in nodes:
            z = n["metadata"]["labels"].get("topology.kubernetes.io/zone")
            if z in per_zone:
                per_zone[z] += 1
        project, _, cname = _split_cluster_key(key)
        prefix = f"gke-{cname}-{pool_name}"[:48].rstrip("-")
        for _ in range(count - len(nodes)):
            zone = min(zones, key=lambda z: per_zone[z])
            per_zone[zone] += 1
            while True:
                name = f"{prefix}-{_hash(key, pool_name, zone)}-{uuid.uuid4().hex[:4]}"
                if kube.get_object("", "nodes", None, name) is None:
                    break
            kube.create(RT_NODE, _node_object(sb, key, cl, pool, zone, name, _next_ip(sb)))
    elif count < len(nodes):
        busy = {p.get("spec", {}).get("nodeName") for p in kube.list_objects("", "pods")}
        prefer = list(prefer_remove)
        order = sorted(nodes, key=lambda n: (n["metadata"]["name"] not in prefer,
                                             n["metadata"]["name"] in busy,
                                             -int(n["metadata"]["resourceVersion"])))
        for node in order[: len(nodes) - count]:
            kube.delete(RT_NODE, None, node["metadata"]["name"])
    internal = _state(sb)["internal"].setdefault(f"{key}/nodePools/{pool_name}", {})
    if "labels" not in internal:
        sample = _node_object(sb, key, cl, pool, zones[0], "template", "10.128.0.2")
        internal["labels"] = sorted(sample["metadata"]["labels"])
        internal["taints"] = sample["spec"].get("taints", [])
    sb.store.mark()
    _sync_cluster_counts(sb, key)
    return sorted(n["metadata"]["name"] for n in _pool_nodes(kube, pool_name))


# ---- the Kubernetes API a new cluster comes with ------------------------------------------------------
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


def _device_plugin_daemonset() -> dict:
    labels = {"k8s-app": DEVICE_PLUGIN}
    return {
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": DEVICE_PLUGIN, "namespace": "kube-system",
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
    kube.put(_device_plugin_daemonset())


# ---- building clusters and pools ----------------------------------------------------------------------
def _resolve_version(requested: str | None, kind: str) -> str:
    if not requested or requested in ("-", "latest"):
        return DEFAULT_VERSION if not requested or requested == "-" else VALID_VERSIONS[0]
    for v in VALID_VERSIONS:
        if v == requested or v.startswith(requested + ".") or v.startswith(requested + "-"):
            return v
    raise ApiError(400, f"{kind} version \"{requested}\" is unsupported.")


def _validate_autoscaling(auto: dict) -> dict:
    if not auto.get("enabled"):
        return auto
    per_zone = "minNodeCount" in auto or "maxNodeCount" in auto
    total = "totalMinNodeCount" in auto or "totalMaxNodeCount" in auto
    if per_zone and total:
        raise ApiError(400, "Autoscaling: per zone limits (min_node_count, max_node_count) and total limits "
                            "(total_min_node_count, total_max_node_count) cannot be set together.")
    lo = int(auto.get("totalMinNodeCount" if total else "minNodeCount", 0))
    hi = int(auto.get("totalMaxNodeCount" if total else "maxNodeCount", 0))
    if hi < 1:
        raise ApiError(400, "Autoscaling: max_node_count must be greater than 0.")
    if lo > hi:
        raise ApiError(400, f"Autoscaling: min_node_count ({lo}) must be less than or equal to "
                            f"max_node_count ({hi}).")
    auto.setdefault("locationPolicy", "BALANCED")
    return auto


def _valid_name(name: str, message: str, noun: str) -> str:
    if not name:
        raise ApiError(400, f"{message}.name must be specified.")
    if not NAME_RE.match(name):
        raise ApiError(400, f"Invalid {noun} name \"{name}\": must match regex [a-z]([-a-z0-9]*[a-z0-9])? and be "
                            f"at most 40 characters.")
    return name


def _build_pool(sb: "Sandbox", cluster_key: str, cluster: dict, spec: dict) -> dict:
    pool = copy.deepcopy(spec)
    name = _valid_name(pool.get("name", ""), "NodePool", "node pool")
    if int(pool.get("initialNodeCount", 0)) < 0:
        raise ApiError(400, "NodePool.initial_node_count must be >= 0.")
    cfg = pool.setdefault("config", {})
    cfg.setdefault("machineType", "e2-medium")
    cfg.setdefault("diskSizeGb", 100)
    cfg.setdefault("diskType", "pd-balanced")
    cfg.setdefault("imageType", "COS_CONTAINERD")
    cfg.setdefault("oauthScopes", list(DEFAULT_OAUTH_SCOPES))
    cfg.setdefault("serviceAccount", "default")
    cfg.setdefault("metadata", {}).setdefault("disable-legacy-endpoints", "true")
    cfg.setdefault("shieldedInstanceConfig", {"enableIntegrityMonitoring": True})
    if cluster.get("workloadIdentityConfig", {}).get("workloadPool"):
        cfg.setdefault("workloadMetadataConfig", {"mode": "GKE_METADATA"})
    machine = cfg["machineType"]
    family = machine.split("-")[0]
    if not cfg.get("accelerators") and machine in G2_GPUS:
        # GKE attaches a G2 machine's L4 GPUs itself.
        cfg["accelerators"] = [{"acceleratorCount": str(G2_GPUS[machine]), "acceleratorType": "nvidia-l4"}]
    for acc in cfg.get("accelerators", []):
        atype = acc.get("acceleratorType", "")
        families = ACCEL_FAMILIES.get(atype)
        if families and family not in families:
            raise ApiError(400, f"Accelerator type \"{atype}\" is not supported on machine type \"{machine}\": "
                                f"use a {'/'.join(f + '-*' for f in families)} machine type.")
        if machine in G2_GPUS and int(acc.get("acceleratorCount", 0)) != G2_GPUS[machine]:
            raise ApiError(400, f"Machine type \"{machine}\" comes with {G2_GPUS[machine]} x {atype}; "
                                f"accelerator_count {acc.get('acceleratorCount', 0)} does not match.")
    pool["locations"] = list(pool.get("locations") or cluster.get("locations") or [cluster["location"]])
    region = _region_of(cluster["location"])
    for z in pool["locations"]:
        if _region_of(z) != region:
            raise ApiError(400, f"Location \"{z}\" is not in the cluster's region {region}.")
    if "autoscaling" in pool:
        pool["autoscaling"] = _validate_autoscaling(pool["autoscaling"])
    pool.setdefault("management", {"autoUpgrade": True, "autoRepair": True})
    pool.setdefault("maxPodsConstraint", {"maxPodsPerNode": "110"})
    pool.setdefault("podIpv4CidrSize", 24)
    pool.setdefault("upgradeSettings", {"maxSurge": 1, "strategy": "SURGE"})
    pool["networkConfig"] = {"podRange": f"gke-{cluster['name']}-pods-{_hash(cluster_key, n=8)}",
                             "podIpv4CidrBlock": cluster.get("clusterIpv4Cidr", "10.64.0.0/14"),
                             **pool.get("networkConfig", {})}
    pool["version"] = _resolve_version(pool.get("version"), "Node") if pool.get("version") else \
        cluster.get("currentNodeVersion", cluster.get("currentMasterVersion", DEFAULT_VERSION))
    project = _split_cluster_key(cluster_key)[0]
    pool["selfLink"] = f"{LINK}/{cluster_key}/nodePools/{name}"
    pool["instanceGroupUrls"] = [
        f"{COMPUTE_LINK}/projects/{project}/zones/{z}/instanceGroupManagers/"
        f"gke-{cluster['name']}-{name}-{_hash(cluster_key, name, z)}-grp" for z in pool["locations"]]
    pool["status"] = "PROVISIONING"
    for k in ("statusMessage", "conditions", "etag"):
        pool.pop(k, None)
    _etag(pool)
    return _canonical(container_v1.NodePool, pool)


def _initial_size(pool: dict) -> int:
    zones = max(1, len(pool.get("locations", [])))
    size = int(pool.get("initialNodeCount", 0)) * zones
    limits = _pool_limits(pool)
    if limits:
        size = max(size, limits[0])
    return size


def _build_cluster(sb: "Sandbox", project: str, location: str, spec: dict) -> dict:
    cl = copy.deepcopy(spec)
    name = _valid_name(cl.get("name", ""), "Cluster", "cluster")
    key = _cluster_key(project, location, name)
    pools = cl.pop("nodePools", [])
    initial = int(cl.pop("initialNodeCount", 0))
    node_config = cl.pop("nodeConfig", None)
    if pools and (initial or node_config):
        raise ApiError(400, "Cluster.node_pools and Cluster.initial_node_count/node_config are mutually exclusive: "
                            "set only node_pools.")
    if not pools:
        if initial <= 0:
            raise ApiError(400, "Cluster.initial_node_count must be greater than zero.")
        pools = [{"name": "default-pool", "initialNodeCount": initial, "config": node_config or {}}]
    region = _region_of(location)
    zonal = region != location
    cl["location"] = location
    cl["zone"] = location
    cl["locations"] = list(cl.get("locations") or [location if zonal else f"{region}-a"])
    master = _resolve_version(cl.get("initialClusterVersion"), "Master")
    cl["initialClusterVersion"] = master
    cl["currentMasterVersion"] = master
    cl["currentNodeVersion"] = master
    cl.setdefault("network", "default")
    cl.setdefault("subnetwork", "default")
    cl.setdefault("clusterIpv4Cidr", "10.64.0.0/14")
    cl["servicesIpv4Cidr"] = "34.118.224.0/20"
    cl.setdefault("loggingService", "logging.googleapis.com/kubernetes")
    cl.setdefault("monitoringService", "monitoring.googleapis.com/kubernetes")
    cl.setdefault("nodeIpv4CidrSize", 24)
    cl.setdefault("releaseChannel", {"channel": "REGULAR"})
    cl.setdefault("shieldedNodes", {"enabled": True})
    cl.setdefault("databaseEncryption", {"state": "DECRYPTED"})
    cl["addonsConfig"] = _deep_merge({"gcePersistentDiskCsiDriverConfig": {"enabled": True},
                                      "networkPolicyConfig": {"disabled": True},
                                      "kubernetesDashboard": {"disabled": True}}, cl.get("addonsConfig", {}))
    cl.setdefault("ipAllocationPolicy", {"useIpAliases": True, "clusterIpv4CidrBlock": cl["clusterIpv4Cidr"],
                                         "servicesIpv4CidrBlock": cl["servicesIpv4Cidr"], "stackType": "IPV4"})
    cl["networkConfig"] = {"network": f"projects/{project}/global/networks/{cl['network']}",
                           "subnetwork": f"projects/{project}/regions/{region}/subnetworks/{cl['subnetwork']}",
                           "defaultSnatStatus": {}, **cl.get("networkConfig", {})}
    cl["masterAuth"] = {"clusterCaCertificate": FAKE_CA}
    if cl.get("resourceLabels"):
        cl["labelFingerprint"] = _hash(json.dumps(cl["resourceLabels"], sort_keys=True), n=8)
    cl["selfLink"] = f"{LINK}/{key}"
    cl["id"] = _hash(key, "id", n=32)
    cl["createTime"] = sb.clock.rfc3339()
    cl["status"] = "PROVISIONING"
    cl.pop("endpoint", None)
    cl = _canonical(container_v1.Cluster, cl)
    seen = set()
    built = []
    for p in pools:
        if p.get("name") in seen:
            raise ApiError(400, f"Node pool \"{p.get('name')}\" appears twice in Cluster.node_pools.")
        seen.add(p.get("name"))
        built.append(_build_pool(sb, key, cl, p))
    cl["nodePools"] = built
    _etag(cl)
    return cl


# ---- operations ---------------------------------------------------------------------------------------
def _busy(sb: "Sandbox", cluster_key: str) -> None:
    gke = _state(sb)
    for op_key in gke["pending"]:
        rec = gke["operations"][op_key]
        if rec["cluster"] == cluster_key:
            raise ApiError(400, f"Cluster is running incompatible operation {rec['op']['name']}.",
                           status="FAILED_PRECONDITION")


def _new_op(sb: "Sandbox", cluster_key: str, op_type: str, target: str, effect: dict,
            error: dict | None = None) -> dict:
    gke = _state(sb)
    project, location, _ = _split_cluster_key(cluster_key)
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


def _finish(sb: "Sandbox", op_key: str) -> None:
    gke = _state(sb)
    rec = gke["operations"][op_key]
    op = rec["op"]
    if op["status"] == "DONE":
        return
    try:
        error = rec.get("error") or _apply(sb, rec)
    except ApiError as err:  # the target vanished or the patch no longer applies
        error = {"code": 9, "message": err.message}
    if error:
        _rollback(sb, rec)
        op["error"] = error
        op["statusMessage"] = error["message"]
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
        _etag(cl)
    sb.store.mark()


def _pool_of(sb: "Sandbox", rec: dict) -> tuple[dict, dict]:
    cl = _state(sb)["clusters"].get(rec["cluster"])
    if cl is None:
        raise ApiError(404, f"Not found: {rec['cluster']}.")
    pool = _find_pool(cl, rec["effect"]["pool"])
    if pool is None:
        raise ApiError(404, f"Not found: {rec['cluster']}/nodePools/{rec['effect']['pool']}.")
    return cl, pool


def _apply(sb: "Sandbox", rec: dict) -> dict | None:
    """Land an operation's effect; return a google.rpc.Status dict if it fails."""
    effect = rec["effect"]
    key = rec["cluster"]
    project = _split_cluster_key(key)[0]
    kind = effect["kind"]
    if kind == "create_cluster":
        cl = _state(sb)["clusters"][key]
        for pool in cl["nodePools"]:
            problem = _capacity_problem(sb, project, pool, _initial_size(pool))
            if problem:
                return {"code": 8, "message": problem}
        cl["status"] = "RUNNING"
        cl["endpoint"] = "127.0.0.1"
        seed_kubernetes(_kube(sb, key))
        for pool in cl["nodePools"]:
            pool["status"] = "RUNNING"
            _etag(pool)
            resize_pool(sb, key, pool["name"], _initial_size(pool))
        return None
    if kind == "create_pool":
        cl, pool = _pool_of(sb, rec)
        problem = _capacity_problem(sb, project, pool, _initial_size(pool))
        if problem:
            return {"code": 8, "message": problem}
        pool["status"] = "RUNNING"
        _etag(pool)
        resize_pool(sb, key, pool["name"], _initial_size(pool))
        return None
    if kind == "update_cluster":
        _apply_cluster_update(sb, key, effect["update"])
        return None
    cl, pool = _pool_of(sb, rec)
    if kind == "pool_patch":
        before = copy.deepcopy(pool)
        new = _deep_merge(copy.deepcopy(pool), effect["patch"])
        for k, v in effect.get("replace", {}).items():
            target = new
            *path, last = k.split(".")
            for p in path:
                target = target.setdefault(p, {})
            if v in (None, [], {}):
                target.pop(last, None)
            else:
                target[last] = copy.deepcopy(v)
        new = _canonical(container_v1.NodePool, new)
        pool.clear()
        pool.update(new)
        pool["status"] = "RECONCILING"
        _etag(pool)
        if before.get("config") != pool.get("config") or before.get("version") != pool.get("version"):
            _sync_nodes(sb, key, pool)
        if before.get("locations") != pool.get("locations"):
            resize_pool(sb, key, pool["name"], pool_size(sb, key, pool["name"]))
        return None
    if kind == "set_size":
        total = int(effect["count"]) * max(1, len(pool.get("locations", [])))
        problem = _capacity_problem(sb, project, pool, total - pool_size(sb, key, pool["name"]))
        if problem:
            return {"code": 8, "message": problem}
        resize_pool(sb, key, pool["name"], total)
        return None
    raise ApiError(500, f"unknown operation effect {kind}")


def _rollback(sb: "Sandbox", rec: dict) -> None:
    gke = _state(sb)
    kind = rec["effect"]["kind"]
    if kind == "create_cluster":
        gke["clusters"].pop(rec["cluster"], None)
        for k in [k for k in gke["internal"] if k.startswith(rec["cluster"] + "/")]:
            gke["internal"].pop(k)
    elif kind == "create_pool":
        cl = gke["clusters"].get(rec["cluster"])
        if cl is not None:
            cl["nodePools"] = [p for p in cl["nodePools"] if p["name"] != rec["effect"]["pool"]]
            gke["internal"].pop(f"{rec['cluster']}/nodePools/{rec['effect']['pool']}", None)


def reconcile(sb: "Sandbox") -> None:
    """Finish every operation that has run for 5 simulated seconds. Cheap when nothing is pending.

    Meant for `controllers.CONTROLLERS` (so advancing the clock finishes operations); every GKE
    handler calls it too.
    """
    gke = _state(sb)
    if not gke["pending"]:
        return
    now = sb.clock.now()
    for op_key in list(gke["pending"]):
        if now - gke["operations"][op_key]["start"] >= OP_DONE_AFTER_S:
            _finish(sb, op_key)


# ---- cluster updates ------------------------------------------------------------------------------------
# ClusterUpdate fields that land somewhere other than Cluster.<name without "desired">.
_NETWORK_UPDATES = {"desiredDatapathProvider": "datapathProvider", "desiredDefaultSnatStatus": "defaultSnatStatus",
                    "desiredDnsConfig": "dnsConfig", "desiredGatewayApiConfig": "gatewayApiConfig",
                    "desiredPrivateIpv6GoogleAccess": "privateIpv6GoogleAccess",
                    "desiredL4ilbSubsettingConfig": "enableL4ilbSubsetting",
                    "desiredIntraNodeVisibilityConfig": "enableIntraNodeVisibility",
                    "desiredServiceExternalIpsConfig": "serviceExternalIpsConfig",
                    "desiredEnableFqdnNetworkPolicy": "enableFqdnNetworkPolicy",
                    "desiredEnableMultiNetworking": "enableMultiNetworking"}
_CLUSTER_RENAMES = {"desiredClusterAutoscaling": "autoscaling", "desiredLocations": "locations"}


def _apply_cluster_update(sb: "Sandbox", key: str, update: dict) -> None:
    cl = _state(sb)["clusters"][key]
    fields = set(container_v1.Cluster.meta.fields)
    pool_id = update.get("desiredNodePoolId")
    pools = [p for p in cl.get("nodePools", []) if pool_id in (None, "", p["name"])]
    for field, value in update.items():
        if field in ("desiredNodePoolId", "etag"):
            continue
        if field == "desiredMasterVersion":
            cl["currentMasterVersion"] = _resolve_version(value, "Master")
        elif field == "desiredNodeVersion":
            version = _resolve_version(value if value != "-" else cl["currentMasterVersion"], "Node")
            for pool in pools:
                pool["version"] = version
                _sync_nodes(sb, key, pool)
            cl["currentNodeVersion"] = min(p.get("version", version) for p in cl["nodePools"])
        elif field == "desiredImageType":
            for pool in pools:
                pool.setdefault("config", {})["imageType"] = value
        elif field == "desiredNodePoolAutoscaling":
            for pool in pools:
                pool["autoscaling"] = _validate_autoscaling(copy.deepcopy(value))
        elif field in _NETWORK_UPDATES:
            inner = _NETWORK_UPDATES[field]
            if isinstance(value, dict) and inner.startswith("enable") and "enabled" in value:
                value = value["enabled"]
            cl.setdefault("networkConfig", {})[inner] = value
        elif field == "desiredAddonsConfig":
            cl["addonsConfig"] = _deep_merge(cl.get("addonsConfig", {}), value)
        else:
            target = _CLUSTER_RENAMES.get(field) or (field[len("desired"):][:1].lower() + field[len("desired") + 1:])
            snake = re.sub(r"([A-Z])", r"_\1", target).lower()
            if snake in fields:
                cl[target] = copy.deepcopy(value)
    new = _canonical(container_v1.Cluster, cl)
    cl.clear()
    cl.update(new)
    _etag(cl)


# ---- handlers -------------------------------------------------------------------------------------------
def create_cluster(sb: "Sandbox", req: Request):
    reconcile(sb)
    project, location = _req_loc(req)
    body = parse_google_body(req, container_v1.CreateClusterRequest)
    if "cluster" not in body:
        raise ApiError(400, "Cluster.name must be specified.")
    cl = _build_cluster(sb, project, location, body["cluster"])
    key = _cluster_key(project, location, cl["name"])
    gke = _state(sb)
    if key in gke["clusters"]:
        raise ApiError(409, f"Already exists: {key}.")
    error = _fault_status(req, _take_fault(req), key, cl)
    gke["clusters"][key] = cl
    op = _new_op(sb, key, "CREATE_CLUSTER", key, {"kind": "create_cluster"}, error)
    return emit_google(req, container_v1.Operation, op)


def get_cluster(sb: "Sandbox", req: Request):
    reconcile(sb)
    _, cl, _ = _lookup(sb, *_req_loc(req), req.match["cluster"])
    return emit_google(req, container_v1.Cluster, cl)


def list_clusters(sb: "Sandbox", req: Request):
    reconcile(sb)
    project, location = _req_loc(req)
    prefix = f"projects/{project}/locations/"
    out = [cl for key, cl in sorted(_state(sb)["clusters"].items())
           if key.startswith(prefix) and (location == "-" or cl.get("location") == location)]
    return emit_google(req, container_v1.ListClustersResponse, {"clusters": out})


def update_cluster(sb: "Sandbox", req: Request):
    reconcile(sb)
    key, cl, _ = _lookup(sb, *_req_loc(req), req.match["cluster"])
    body = parse_google_body(req, container_v1.UpdateClusterRequest)
    update = body.get("update") or {}
    if not [k for k in update if k != "etag"]:
        raise ApiError(400, "Update must set at least one field.")
    _busy(sb, key)
    if update.get("desiredNodePoolId") and _find_pool(cl, update["desiredNodePoolId"]) is None:
        raise _not_found(f"{key}/nodePools/{update['desiredNodePoolId']}")
    if "desiredMasterVersion" in update:
        _resolve_version(update["desiredMasterVersion"], "Master")
    per_pool = [f for f in ("desiredNodePoolAutoscaling", "desiredImageType") if f in update]
    if per_pool and not update.get("desiredNodePoolId") and len(cl.get("nodePools", [])) > 1:
        raise ApiError(400, f"{per_pool[0]} needs desired_node_pool_id when the cluster has more than one node pool.")
    if "desiredNodePoolAutoscaling" in update:
        _validate_autoscaling(copy.deepcopy(update["desiredNodePoolAutoscaling"]))
    op_type = ("UPGRADE_MASTER" if "desiredMasterVersion" in update else
               "UPGRADE_NODES" if "desiredNodeVersion" in update else "UPDATE_CLUSTER")
    fault = _take_fault(req)
    cl["status"] = "RECONCILING"
    _etag(cl)
    op = _new_op(sb, key, op_type, key, {"kind": "update_cluster", "update": update},
                 _fault_status(req, fault, key, cl))
    return emit_google(req, container_v1.Operation, op)


def _fault_status(req: Request, fault: str | None, key: str, cl: dict, pool: dict | None = None) -> dict | None:
    if fault is None:
        return None
    project = _split_cluster_key(key)[0]
    pool = pool or next((p for p in cl.get("nodePools", []) if _accelerator(p)[0]),
                        (cl.get("nodePools") or [{}])[0])
    accel, per = _accelerator(pool)
    zone = (pool.get("locations") or [cl.get("location", "")])[0]
    machine = pool.get("config", {}).get("machineType", "e2-medium")
    if fault == "stockout":
        return {"code": 8, "message": _stockout_message(project, zone, accel or "instances", machine)}
    metric = gpu_quota_metric(accel) if accel else "CPUS"
    return {"code": 8, "message": _quota_message(project, metric, float(per or _machine_shape(machine)[0]),
                                                  0.0, 0.0, True)}


def create_node_pool(sb: "Sandbox", req: Request):
    reconcile(sb)
    key, cl, _ = _lookup(sb, *_req_loc(req), req.match["cluster"])
    body = parse_google_body(req, container_v1.CreateNodePoolRequest)
    if "nodePool" not in body:
        raise ApiError(400, "NodePool.name must be specified.")
    pool = _build_pool(sb, key, cl, body["nodePool"])
    if _find_pool(cl, pool["name"]) is not None:
        raise ApiError(409, f"Already exists: {key}/nodePools/{pool['name']}.")
    _busy(sb, key)
    fault = _take_fault(req)
    error = _fault_status(req, fault, key, cl, pool)
    if error is None:
        accel, _ = _accelerator(pool)
        out = [z for z in pool["locations"] if _stocked_out(sb, z, accel)]
        if out:
            error = {"code": 8, "message": _stockout_message(_split_cluster_key(key)[0], out[0], accel,
                                                              pool["config"]["machineType"])}
    cl["nodePools"].append(pool)
    cl["status"] = "RECONCILING"
    _etag(cl)
    op = _new_op(sb, key, "CREATE_NODE_POOL", f"{key}/nodePools/{pool['name']}",
                 {"kind": "create_pool", "pool": pool["name"]}, error)
    return emit_google(req, container_v1.Operation, op)


def get_node_pool(sb: "Sandbox", req: Request):
    reconcile(sb)
    _, _, pool = _lookup(sb, *_req_loc(req), req.match["cluster"], req.match["pool"])
    return emit_google(req, container_v1.NodePool, pool)


def list_node_pools(sb: "Sandbox", req: Request):
    reconcile(sb)
    _, cl, _ = _lookup(sb, *_req_loc(req), req.match["cluster"])
    return emit_google(req, container_v1.ListNodePoolsResponse, {"nodePools": cl.get("nodePools", [])})


# UpdateNodePoolRequest field -> (NodePool path, how the value is unwrapped). Wrapped messages
# (NodeTaints, NodeLabels, NetworkTags, ResourceLabels) replace the whole list/map.
_POOL_UPDATES = {
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
    reconcile(sb)
    key, cl, pool = _lookup(sb, *_req_loc(req), req.match["cluster"], req.match["pool"])
    body = parse_google_body(req, container_v1.UpdateNodePoolRequest)
    if not body.get("nodeVersion"):
        raise ApiError(400, "UpdateNodePoolRequest.node_version must be specified "
                            "(use the pool's current version, or \"-\" for the master version).")
    if not body.get("imageType"):
        raise ApiError(400, "UpdateNodePoolRequest.image_type must be specified "
                            "(use the pool's current image type).")
    _busy(sb, key)
    version = body["nodeVersion"]
    if version == "-":
        version = cl["currentMasterVersion"]
    elif version not in (pool.get("version"), cl.get("currentMasterVersion")):  # e.g. after an auto-upgrade
        version = _resolve_version(version, "Node")
    replace: dict[str, Any] = {"version": version, "config.imageType": body["imageType"]}
    for field, (path, unwrap) in _POOL_UPDATES.items():
        if field in body:
            value = body[field]
            replace[path] = value.get(unwrap, [] if unwrap in ("tags", "taints") else {}) if unwrap else value
    if "locations" in replace:
        region = _region_of(cl["location"])
        bad = [z for z in replace["locations"] if _region_of(z) != region]
        if bad or not replace["locations"]:
            raise ApiError(400, f"Invalid node pool locations {replace['locations']} for a cluster in {region}.")
    fault = _take_fault(req)
    pool["status"] = "RECONCILING"
    _etag(pool)
    cl["status"] = "RECONCILING"
    _etag(cl)
    op_type = "UPGRADE_NODES" if version != pool.get("version") else "UPDATE_CLUSTER"
    op = _new_op(sb, key, op_type, f"{key}/nodePools/{pool['name']}",
                 {"kind": "pool_patch", "pool": pool["name"], "patch": {}, "replace": replace},
                 _fault_status(req, fault, key, cl, pool))
    return emit_google(req, container_v1.Operation, op)


def set_autoscaling(sb: "Sandbox", req: Request):
    reconcile(sb)
    key, cl, pool = _lookup(sb, *_req_loc(req), req.match["cluster"], req.match["pool"])
    body = parse_google_body(req, container_v1.SetNodePoolAutoscalingRequest)
    auto = _validate_autoscaling(body.get("autoscaling", {}))
    _busy(sb, key)
    fault = _take_fault(req)
    pool["status"] = "RECONCILING"
    _etag(pool)
    cl["status"] = "RECONCILING"
    _etag(cl)
    op = _new_op(sb, key, "UPDATE_CLUSTER", f"{key}/nodePools/{pool['name']}",
                 {"kind": "pool_patch", "pool": pool["name"], "patch": {}, "replace": {"autoscaling": auto}},
                 _fault_status(req, fault, key, cl, pool))
    return emit_google(req, container_v1.Operation, op)


def set_management(sb: "Sandbox", req: Request):
    reconcile(sb)
    key, cl, pool = _lookup(sb, *_req_loc(req), req.match["cluster"], req.match["pool"])
    body = parse_google_body(req, container_v1.SetNodePoolManagementRequest)
    _busy(sb, key)
    fault = _take_fault(req)
    pool["status"] = "RECONCILING"
    _etag(pool)
    cl["status"] = "RECONCILING"
    _etag(cl)
    op = _new_op(sb, key, "SET_NODE_POOL_MANAGEMENT", f"{key}/nodePools/{pool['name']}",
                 {"kind": "pool_patch", "pool": pool["name"], "patch": {},
                  "replace": {"management": body.get("management", {})}},
                 _fault_status(req, fault, key, cl, pool))
    return emit_google(req, container_v1.Operation, op)


def set_size(sb: "Sandbox", req: Request):
    reconcile(sb)
    key, cl, pool = _lookup(sb, *_req_loc(req), req.match["cluster"], req.match["pool"])
    body = parse_google_body(req, container_v1.SetNodePoolSizeRequest)
    count = int(body.get("nodeCount", 0))
    if count < 0:
        raise ApiError(400, "SetNodePoolSizeRequest.node_count must be >= 0.")
    _busy(sb, key)
    fault = _take_fault(req)
    pool["status"] = "RECONCILING"
    _etag(pool)
    cl["status"] = "RECONCILING"
    _etag(cl)
    op = _new_op(sb, key, "SET_NODE_POOL_SIZE", f"{key}/nodePools/{pool['name']}",
                 {"kind": "set_size", "pool": pool["name"], "count": count},
                 _fault_status(req, fault, key, cl, pool))
    return emit_google(req, container_v1.Operation, op)


def get_operation(sb: "Sandbox", req: Request):
    if req.fault is not None:  # a failed poll must not advance the operation
        fault, req.fault = req.fault, None
        raise fault_error(fault, "GetOperation")
    reconcile(sb)
    project, location = _req_loc(req)
    op_key = f"projects/{project}/locations/{location}/operations/{req.match['operation']}"
    gke = _state(sb)
    rec = gke["operations"].get(op_key)
    if rec is None:
        raise _not_found(op_key)
    op = rec["op"]
    if op["status"] == "PENDING":
        op["status"] = "RUNNING"
        sb.store.mark()
    elif op["status"] == "RUNNING":
        _finish(sb, op_key)
    return emit_google(req, container_v1.Operation, op)


def list_operations(sb: "Sandbox", req: Request):
    reconcile(sb)
    project, location = _req_loc(req)
    prefix = f"projects/{project}/locations/"
    ops = [rec["op"] for k, rec in _state(sb)["operations"].items()
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


# ---- admin (tests and demos; never counted as client calls) ----------------------------------------
def _admin_cluster(sb: "Sandbox", body: dict) -> tuple[str, dict]:
    name = body.get("cluster")
    if not isinstance(name, str) or not name:
        raise ApiError(400, "needs `cluster`: projects/P/locations/L/clusters/C")
    key = _resolve_cluster_key(sb, name)
    return key, _state(sb)["clusters"][key]


def admin_add_stockout(sb: "Sandbox", req: Request):
    body = req.json()
    if not body.get("zone") or not body.get("acceleratorType"):
        raise ApiError(400, "a stockout needs `zone` and `acceleratorType` (e.g. us-central1-a, nvidia-l4)")
    entry = {"zone": body["zone"], "acceleratorType": body["acceleratorType"]}
    gke = _state(sb)
    if entry not in gke["stockouts"]:
        gke["stockouts"].append(entry)
        sb.store.mark()
    return {"stockouts": gke["stockouts"]}


def admin_list_stockouts(sb: "Sandbox", req: Request):
    return {"stockouts": _state(sb)["stockouts"]}


def admin_clear_stockouts(sb: "Sandbox", req: Request):
    """Without a body: clear every stockout; with {zone?, acceleratorType?}: only the matching ones."""
    body = req.json()
    gke = _state(sb)
    gke["stockouts"] = [s for s in gke["stockouts"]
                        if body and any(k in body and s[k] != body[k] for k in ("zone", "acceleratorType"))]
    sb.store.mark()
    return {"stockouts": gke["stockouts"]}


def admin_drift_pool(sb: "Sandbox", req: Request):
    body = req.json()
    key, cl = _admin_cluster(sb, body)
    pool = _find_pool(cl, body.get("nodePool", ""))
    if pool is None:
        raise _not_found(f"{key}/nodePools/{body.get('nodePool')}")
    if not isinstance(body.get("patch"), dict):
        raise ApiError(400, "drift needs a `patch` object (NodePool JSON, camelCase)")
    new = _canonical(container_v1.NodePool, _deep_merge(copy.deepcopy(pool), body["patch"]))
    config_changed = new.get("config") != pool.get("config")
    pool.clear()
    pool.update(new)
    _etag(pool)
    _etag(cl)
    if config_changed:
        _sync_nodes(sb, key, pool)
    sb.store.mark()
    return pool


def admin_drift_cluster(sb: "Sandbox", req: Request):
    body = req.json()
    key, cl = _admin_cluster(sb, body)
    if not isinstance(body.get("patch"), dict):
        raise ApiError(400, "drift needs a `patch` object (Cluster JSON, camelCase)")
    new = _canonical(container_v1.Cluster, _deep_merge(copy.deepcopy(cl), body["patch"]))
    cl.clear()
    cl.update(new)
    _etag(cl)
    sb.store.mark()
    return cl


def admin_upgrade(sb: "Sandbox", req: Request):
    """Simulated auto-upgrade: moves the master and (unless `nodePools: false`) every pool to `version`."""
    body = req.json()
    key, cl = _admin_cluster(sb, body)
    version = body.get("version")
    if not isinstance(version, str) or not version:
        raise ApiError(400, "upgrade needs `version`, e.g. 1.34.1-gke.1100")
    cl["currentMasterVersion"] = version
    if body.get("nodePools", True):
        for pool in cl.get("nodePools", []):
            pool["version"] = version
            _etag(pool)
            _sync_nodes(sb, key, pool)
        cl["currentNodeVersion"] = version
    _etag(cl)
    op = _new_op(sb, key, "UPGRADE_MASTER", key, {"kind": "noop"})
    gke = _state(sb)
    op_key = gke["pending"].pop()
    op.update({"status": "DONE", "endTime": sb.clock.rfc3339(), "detail": "Automatic upgrade (simulated)"})
    gke["operations"][op_key]["op"] = op
    sb.store.mark()
    return cl


def admin_resize(sb: "Sandbox", req: Request):
    """Resize a pool as the autoscaler would: {cluster, nodePool, count} (no checks, no operation)."""
    body = req.json()
    key, _ = _admin_cluster(sb, body)
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
    # admin.py gathers only gke/kube/controllers admin routes; the other Google APIs' verbs ride here.
    *serviceusage.ADMIN_ROUTES,
    *compute.ADMIN_ROUTES,
]
