"""GKE's state: clusters, node pools, operations and injected stockouts, as the container v1 messages hold them.

Simulation: no VM, control plane or instance group exists. A cluster is a JSON document in the
sandbox state (`gke` section), written and answered with the client library's own message types
(`container_v1.Cluster`, `NodePool`, `Operation`). The helpers here read and validate that state;
they change nothing behind the caller's back.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from typing import TYPE_CHECKING

from google.protobuf import json_format

from ..core import ApiError, gke_for_kube_id, kube_id_for_gke

if TYPE_CHECKING:
    from ..core import SandboxContext as Sandbox

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
# What GKE really runs: one DaemonSet per node size and image (rapidsai/deployment#572 shows
# nvidia-gpu-device-plugin-medium-cos-h5kkz; kubectl dumps of GKE 1.29 list all six), all labelled
# k8s-app=nvidia-gpu-device-plugin. Which size takes which node GKE does not publish: here by GPUs per node.
DEVICE_PLUGIN_SIZES = (("small", 2), ("medium", 4), ("large", 16))
DEVICE_PLUGINS = tuple(f"{DEVICE_PLUGIN}-{size}-{image}" for size, _ in DEVICE_PLUGIN_SIZES for image in ("cos", "ubuntu"))


def device_plugin_for(gpus: int, os_distribution: str) -> str:
    size = next((s for s, most in DEVICE_PLUGIN_SIZES if gpus <= most), DEVICE_PLUGIN_SIZES[-1][0])
    return f"{DEVICE_PLUGIN}-{size}-{'ubuntu' if os_distribution.startswith('ubuntu') else 'cos'}"

RUNNING_STATES = ("RUNNING", "RECONCILING")


NAME_RE = re.compile(r"^[a-z]([-a-z0-9]{0,38}[a-z0-9])?$")

ZONE_RE = re.compile(r"^([a-z]+-[a-z]+\d+)-[a-z]$")

# NodeConfig.oauth_scopes when the request sets none (container/v1 cluster_service.proto: "If
# unspecified, no scopes are added, unless Cloud Logging or Cloud Monitoring are enabled, in which
# case their required scopes will be added"). gcloud's longer default is gcloud's, not the API's: no
# devstorage.read_only, so such nodes cannot pull from a private registry.
DEFAULT_OAUTH_SCOPES = [
    "https://www.googleapis.com/auth/logging.write",
    "https://www.googleapis.com/auth/monitoring",
]

# vCPUs and memory of the machine types the sandbox knows by name; others follow their family's
# ratio (`machine_shape`), unknown ones get 4 vCPUs / 16Gi.
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

FAMILY_GIB_PER_CPU = {"e2-standard": 4, "e2-highmem": 8, "e2-highcpu": 1, "n2-standard": 4, "n2-highmem": 8,
                       "n1-standard": 3.75, "n1-highmem": 6.5, "g2-standard": 4, "a2-highgpu": 85 / 12}

# Accelerator-optimized families carry their GPUs: GKE attaches them without being asked and refuses
# another accelerator type. (G2: https://cloud.google.com/compute/docs/gpus#l4-gpus)
G2_GPUS = {"g2-standard-4": 1, "g2-standard-8": 1, "g2-standard-12": 1, "g2-standard-16": 1,
           "g2-standard-24": 2, "g2-standard-32": 1, "g2-standard-48": 4, "g2-standard-96": 8}

ACCEL_FAMILIES = {"nvidia-l4": ("g2",), "nvidia-tesla-t4": ("n1",), "nvidia-tesla-p4": ("n1",),
                  "nvidia-tesla-v100": ("n1",), "nvidia-tesla-p100": ("n1",), "nvidia-tesla-a100": ("a2",),
                  "nvidia-a100-80gb": ("a2",), "nvidia-h100-80gb": ("a3",)}

TAINT_EFFECTS = {"NO_SCHEDULE": "NoSchedule", "PREFER_NO_SCHEDULE": "PreferNoSchedule", "NO_EXECUTE": "NoExecute"}


def state(sb: "Sandbox") -> dict:
    gke = sb.store.section("gke")
    if "clusters" not in gke:
        gke.update({"clusters": {}, "operations": {}, "pending": [], "stockouts": [], "internal": {}, "seq": 0})
    return gke


def name_hash(*parts: str, n: int = 8) -> str:
    return hashlib.sha1("/".join(parts).encode()).hexdigest()[:n]


def region_of(location: str) -> str:
    m = ZONE_RE.match(location)
    return m.group(1) if m else location


def canonical(msg_type, data: dict) -> dict:
    """Round-trip through the message type (validates a drift patch, normalises int64 as strings)."""
    pb = msg_type.pb()()
    try:
        json_format.ParseDict(data, pb)
    except json_format.ParseError as exc:
        raise ApiError(400, f"invalid {msg_type.__name__}: {exc}") from None
    return json_format.MessageToDict(pb)


def etag(obj: dict) -> None:
    obj.pop("etag", None)
    obj["etag"] = hashlib.sha1(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def deep_merge(base: dict, patch: dict) -> dict:
    """JSON merge patch (RFC 7386): dicts merge, `null` deletes, anything else replaces."""
    for k, v in patch.items():
        if v is None:
            base.pop(k, None)
        elif isinstance(v, dict) and isinstance(base.get(k), dict):
            deep_merge(base[k], v)
        else:
            base[k] = copy.deepcopy(v)
    return base


def not_found(name: str) -> ApiError:
    return ApiError(404, f"Not found: {name}.")


def cluster_key(project: str, location: str, cluster: str) -> str:
    return f"projects/{project}/locations/{location}/clusters/{cluster}"


def split_cluster_key(key: str) -> tuple[str, str, str]:
    parts = key.split("/")
    return parts[1], parts[3], parts[5]


def resolve_cluster_key(sb: "Sandbox", cluster_name: str) -> str:
    """Full resource name, kube cluster id (`gke_P_L_C`) or bare cluster name -> stored key."""
    clusters = state(sb)["clusters"]
    if cluster_name in clusters:
        return cluster_name
    key = cluster_for_kube(sb, cluster_name)
    if key is not None:
        return key
    matches = [k for k in clusters
               if kube_id_for_gke(*split_cluster_key(k)) == cluster_name or k.rsplit("/", 1)[-1] == cluster_name]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise not_found(cluster_name)
    raise ApiError(400, f"cluster name {cluster_name!r} is ambiguous: {', '.join(sorted(matches))}")


def find_pool(cluster: dict, pool_name: str) -> dict | None:
    for pool in cluster.get("nodePools", []):
        if pool["name"] == pool_name:
            return pool
    return None


def lookup(sb: "Sandbox", project: str, location: str, cluster: str, pool: str | None = None):
    gke = state(sb)
    key = cluster_key(project, location, cluster)
    cl = gke["clusters"].get(key)
    if cl is None:
        raise not_found(key)
    if pool is None:
        return key, cl, None
    np = find_pool(cl, pool)
    if np is None:
        raise not_found(f"{key}/nodePools/{pool}")
    return key, cl, np


def machine_shape(machine_type: str) -> tuple[int, str]:
    if machine_type in MACHINE_TYPES:
        return MACHINE_TYPES[machine_type]
    family, _, n = machine_type.rpartition("-")
    if family in FAMILY_GIB_PER_CPU and n.isdigit():
        cpus = int(n)
        return cpus, f"{int(cpus * FAMILY_GIB_PER_CPU[family] * 1024)}Mi"
    return 4, "16Gi"


def to_ki(quantity: str) -> int:
    units = {"Ki": 1, "Mi": 1024, "Gi": 1024 ** 2}
    for suffix, mult in units.items():
        if quantity.endswith(suffix):
            return int(float(quantity[: -len(suffix)]) * mult)
    return int(quantity) // 1024


def node_allocatable(cpus: int, memory: str) -> tuple[str, str]:
    """Allocatable after GKE's kube-reserved and eviction threshold.

    https://cloud.google.com/kubernetes-engine/docs/concepts/plan-node-sizes
    """
    reserved_m = 60 + (10 if cpus > 1 else 0) + 5 * max(0, min(cpus, 4) - 2) + int(2.5 * max(0, cpus - 4))
    gib = to_ki(memory) / 1024 ** 2
    tiers = ((4, 0.25), (4, 0.20), (8, 0.10), (112, 0.06), (float("inf"), 0.02))
    left, reserved_gib = gib, 0.0
    for size, frac in tiers:
        take = min(left, size)
        reserved_gib += take * frac
        left -= take
    mem_ki = to_ki(memory) - int(reserved_gib * 1024 ** 2) - 100 * 1024
    return f"{cpus * 1000 - reserved_m}m", f"{mem_ki}Ki"


def gpu_quota_metric(accelerator_type: str, spot: bool = False) -> str:
    """Compute quota metric of an accelerator type: nvidia-l4 -> NVIDIA_L4_GPUS, nvidia-tesla-t4 -> NVIDIA_T4_GPUS."""
    core = accelerator_type.lower().removeprefix("nvidia-").removeprefix("tesla-")
    metric = f"NVIDIA_{core.upper().replace('-', '_')}_GPUS"
    return f"PREEMPTIBLE_{metric}" if spot else metric


def accelerator(pool: dict) -> tuple[str | None, int]:
    accels = pool.get("config", {}).get("accelerators") or []
    if not accels:
        return None, 0
    return accels[0].get("acceleratorType"), sum(int(a.get("acceleratorCount", 0)) for a in accels)


def is_spot(pool: dict) -> bool:
    cfg = pool.get("config", {})
    return bool(cfg.get("spot") or cfg.get("preemptible"))


def cluster_names(sb: "Sandbox") -> list[str]:
    """Full resource names (`projects/P/locations/L/clusters/C`) of every simulated GKE cluster."""
    return sorted(state(sb)["clusters"])


def cluster_for_kube(sb: "Sandbox", kube_id: str) -> str | None:
    """The GKE cluster (full resource name) behind a sandbox kube cluster id, or None if not a GKE one."""
    key = gke_for_kube_id(kube_id)
    return key if key in state(sb)["clusters"] else None


def pool_limits(pool: dict) -> tuple[int, int] | None:
    """(min, max) total nodes the autoscaler keeps the pool within, or None if autoscaling is off."""
    auto = pool.get("autoscaling") or {}
    if not auto.get("enabled"):
        return None
    zones = max(1, len(pool.get("locations", [])))
    if "totalMinNodeCount" in auto or "totalMaxNodeCount" in auto:
        return int(auto.get("totalMinNodeCount", 0)), int(auto.get("totalMaxNodeCount", 0))
    return int(auto.get("minNodeCount", 0)) * zones, int(auto.get("maxNodeCount", 0)) * zones


def stocked_out(sb: "Sandbox", zone: str, accel: str | None) -> bool:
    return bool(accel) and any(s["zone"] == zone and s["acceleratorType"] == accel
                               for s in state(sb)["stockouts"])


def stockout_message(project: str, zone: str, accel: str, machine: str) -> str:
    return (f"GCE_STOCKOUT: ZONE_RESOURCE_POOL_EXHAUSTED: The zone 'projects/{project}/zones/{zone}' does not "
            f"have enough resources available to fulfill the request ({accel} on {machine}). Try a different "
            f"zone, or try again later.")


def quota_message(project: str, metric: str, need: float, limit: float, usage: float, regional: bool) -> str:
    avail = max(0.0, limit - usage)
    scope = "regional " if regional else ""
    return (f"Insufficient {scope}quota to satisfy request: resource \"{metric}\": request requires "
            f"'{float(need)}' and is short '{float(need - avail)}'. project has a quota of '{float(limit)}' with "
            f"'{float(avail)}' available. View and manage quotas at "
            f"https://console.cloud.google.com/iam-admin/quotas?usage=USED&project={project}.")


def resolve_version(requested: str | None, kind: str) -> str:
    if not requested or requested in ("-", "latest"):
        return DEFAULT_VERSION if not requested or requested == "-" else VALID_VERSIONS[0]
    for v in VALID_VERSIONS:
        if v == requested or v.startswith(requested + ".") or v.startswith(requested + "-"):
            return v
    raise ApiError(400, f"{kind} version \"{requested}\" is unsupported.")


def validate_autoscaling(auto: dict) -> dict:
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


def initial_size(pool: dict) -> int:
    zones = max(1, len(pool.get("locations", [])))
    size = int(pool.get("initialNodeCount", 0)) * zones
    limits = pool_limits(pool)
    if limits:
        size = max(size, limits[0])
    return size
