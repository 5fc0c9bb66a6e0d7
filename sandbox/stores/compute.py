"""Compute quotas: limits per project (sandbox defaults or what the admin API set) and usage counted from
the live simulated GKE nodes (each node its vCPUs, its accelerators and its boot disk, spot nodes
against the PREEMPTIBLE_* metrics), so creating a pool or scaling it up moves the numbers as on a
real project.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from google.cloud import compute_v1

from ..core import kube_id_for_gke
from .gke import (POOL_LABEL, accelerator, gpu_quota_metric, is_spot, machine_shape, quota_message, region_of,
                  split_cluster_key, stocked_out, stockout_message)
from .gke import state as gke_state

if TYPE_CHECKING:
    from ..core import SandboxContext as Sandbox


REGIONS = {
    "us-central1": ("a", "b", "c", "f"),
    "us-east1": ("b", "c", "d"),
    "us-east4": ("a", "b", "c"),
    "us-west1": ("a", "b", "c"),
    "us-west4": ("a", "b", "c"),
    "europe-west1": ("b", "c", "d"),
    "europe-west3": ("a", "b", "c"),
    "europe-west4": ("a", "b", "c"),
    "asia-east1": ("a", "b", "c"),
    "asia-southeast1": ("a", "b", "c"),
}

# Sandbox defaults, shaped like a new project's (GPUs need a quota increase in real life).
DEFAULT_REGIONAL = {
    "CPUS": 48.0,
    "PREEMPTIBLE_CPUS": 24.0,
    "NVIDIA_L4_GPUS": 4.0,
    "NVIDIA_T4_GPUS": 4.0,
    "PREEMPTIBLE_NVIDIA_L4_GPUS": 4.0,
    "PREEMPTIBLE_NVIDIA_T4_GPUS": 4.0,
    "INSTANCES": 48.0,
    "DISKS_TOTAL_GB": 4096.0,
    "SSD_TOTAL_GB": 2048.0,
    "IN_USE_ADDRESSES": 8.0,
}

DEFAULT_GLOBAL = {
    "GPUS_ALL_REGIONS": 4.0,
    "CPUS_ALL_REGIONS": 64.0,
    "SNAPSHOTS": 1000.0,
    "NETWORKS": 15.0,
    "FIREWALLS": 200.0,
}

KNOWN_METRICS = {m.name for m in compute_v1.Quota.Metric if m.name != "UNDEFINED_METRIC"}


def state(sb: "Sandbox") -> dict:
    return sb.store.section("compute").setdefault("quotas", {})


def limits(sb: "Sandbox", project: str, region: str | None) -> dict[str, float]:
    overrides = state(sb).get(project, {})
    if region is None:
        return {**DEFAULT_GLOBAL, **overrides.get("global", {})}
    return {**DEFAULT_REGIONAL, **overrides.get("regions", {}).get(region, {})}


def usage_of(sb: "Sandbox", project: str) -> dict:
    return resource_usage(sb, project)


def quota(sb: "Sandbox", project: str, region: str | None, metric: str) -> tuple[float, float]:
    """(limit, usage) of a Compute quota metric: regional when `region` is given, else project-wide.

    `project` is the project id as GKE knows it. A metric the sandbox has no default for reads as
    limit 0 unless set with `PUT /sandbox/quotas`, as an unrequested accelerator quota does.
    """
    limit = limits(sb, project, region).get(metric, 0.0)
    usage = usage_of(sb, project)
    used = usage["global"].get(metric, 0.0) if region is None else usage["regions"].get(region, {}).get(metric, 0.0)
    return float(limit), float(used)


def quotas(sb: "Sandbox", project: str, region: str | None) -> list[dict]:
    usage = usage_of(sb, project)
    used = usage["global"] if region is None else usage["regions"].get(region, {})
    return [{"metric": m, "limit": float(lim), "usage": float(used.get(m, 0.0))}
            for m, lim in sorted(limits(sb, project, region).items())]


def resource_usage(sb: "Sandbox", project: str) -> dict:
    """Compute quota usage of a project's simulated GKE nodes.

    Returns `{"regions": {region: {metric: n}}, "global": {metric: n}}`: per node its vCPUs (CPUS,
    or PREEMPTIBLE_CPUS for spot/preemptible pools), its accelerators (NVIDIA_<TYPE>_GPUS or
    PREEMPTIBLE_NVIDIA_<TYPE>_GPUS), INSTANCES, IN_USE_ADDRESSES (a node's external address), its boot disk (SSD_TOTAL_GB for pd-balanced/pd-ssd,
    DISKS_TOTAL_GB for pd-standard); project-wide GPUS_ALL_REGIONS and CPUS_ALL_REGIONS.
    """
    regions: dict[str, dict[str, float]] = {}
    glob: dict[str, float] = {}
    kube_ids = set(sb.kube_cluster_ids())
    for key, cl in gke_state(sb)["clusters"].items():
        p, location, name = split_cluster_key(key)
        if p != project or kube_id_for_gke(p, location, name) not in kube_ids:
            continue
        pools = {pool["name"]: pool for pool in cl.get("nodePools", [])}
        counts: dict[tuple[str, str], int] = {}
        for node in sb.kube(kube_id_for_gke(p, location, name)).list_objects("", "nodes"):
            labels = node["metadata"].get("labels", {})
            pool_name = labels.get(POOL_LABEL)
            if pool_name in pools:
                zone = labels.get("topology.kubernetes.io/zone", cl["location"])
                counts[(pool_name, zone)] = counts.get((pool_name, zone), 0) + 1
        for (pool_name, zone), n in counts.items():
            pool = pools[pool_name]
            cfg = pool.get("config", {})
            region = region_of(zone)
            bucket = regions.setdefault(region, {})
            spot = is_spot(pool)
            cpus = machine_shape(cfg.get("machineType", "e2-medium"))[0] * n
            accel, per_node = accelerator(pool)
            disk_metric = "DISKS_TOTAL_GB" if cfg.get("diskType") == "pd-standard" else "SSD_TOTAL_GB"
            adds = [("PREEMPTIBLE_CPUS" if spot else "CPUS", cpus), ("INSTANCES", n), ("IN_USE_ADDRESSES", n),
                    (disk_metric, int(cfg.get("diskSizeGb", 100)) * n)]
            if accel:
                adds.append((gpu_quota_metric(accel, spot), per_node * n))
                glob["GPUS_ALL_REGIONS"] = glob.get("GPUS_ALL_REGIONS", 0.0) + per_node * n
            for metric, amount in adds:
                bucket[metric] = bucket.get(metric, 0.0) + amount
            glob["CPUS_ALL_REGIONS"] = glob.get("CPUS_ALL_REGIONS", 0.0) + cpus
    return {"regions": regions, "global": glob}


def capacity_problem(sb: "Sandbox", project: str, pool: dict, extra: int) -> str | None:
    """Why `extra` more nodes of this pool cannot be created now (stockout, quota), or None."""
    return stockout_problem(sb, project, pool, extra) or quota_problem(sb, project, pool, extra)


def stockout_problem(sb: "Sandbox", project: str, pool: dict, extra: int) -> str | None:
    """A zone without capacity for the pool's GPU: only creating VMs can meet it (a min-0 pool creates
    none, so it cannot stock out until it scales up)."""
    accel, _ = accelerator(pool)
    zones = pool.get("locations", [])
    if extra > 0 and accel and zones and all(stocked_out(sb, z, accel) for z in zones):
        return stockout_message(project, zones[0], accel, pool.get("config", {}).get("machineType", ""))
    return None


def quota_problem(sb: "Sandbox", project: str, pool: dict, extra: int) -> str | None:
    """Google's quota message for the first metric `extra` nodes would exceed (each node also takes
    an external address: IN_USE_ADDRESSES), or None."""
    if extra <= 0:
        return None
    cfg = pool.get("config", {})
    accel, per_node = accelerator(pool)
    zones = pool.get("locations", [])
    region = region_of(zones[0]) if zones else None
    spot = is_spot(pool)
    cpus = machine_shape(cfg.get("machineType", "e2-medium"))[0]
    needs: list[tuple[str | None, str, int]] = [(region, "PREEMPTIBLE_CPUS" if spot else "CPUS", cpus * extra),
                                                (None, "CPUS_ALL_REGIONS", cpus * extra),
                                                (region, "IN_USE_ADDRESSES", extra)]
    if accel:
        needs[:0] = [(region, gpu_quota_metric(accel, spot), per_node * extra),
                     (None, "GPUS_ALL_REGIONS", per_node * extra)]
    for where, metric, need in needs:
        limit, usage = quota(sb, project, where, metric)
        if usage + need > limit:
            return quota_message(project, metric, need, limit, usage, where is not None)
    return None
