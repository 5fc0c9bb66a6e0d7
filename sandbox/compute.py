"""Compute Engine v1, quotas only: `regions.get` and `projects.get`.

Simulation: limits are sandbox defaults (a new project's modest GPU quota) unless a test or demo
sets them with `PUT /sandbox/quotas`; usage is counted from the live simulated GKE nodes (each node
its vCPUs, its accelerators and its boot disk, spot nodes against the PREEMPTIBLE_* metrics), so
creating a pool or scaling it up moves the numbers as on a real project. Nothing else of Compute
Engine exists here.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from google.cloud import compute_v1

from .core import ApiError
from .http import Request, Route, emit_google

if TYPE_CHECKING:
    from .app import Sandbox

LINK = "https://www.googleapis.com/compute/v1"

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


def _state(sb: "Sandbox") -> dict:
    return sb.store.section("compute").setdefault("quotas", {})


def _limits(sb: "Sandbox", project: str, region: str | None) -> dict[str, float]:
    overrides = _state(sb).get(project, {})
    if region is None:
        return {**DEFAULT_GLOBAL, **overrides.get("global", {})}
    return {**DEFAULT_REGIONAL, **overrides.get("regions", {}).get(region, {})}


def _usage(sb: "Sandbox", project: str) -> dict:
    from . import gke  # gke imports this module; resolve at call time

    return gke.resource_usage(sb, project)


def quota(sb: "Sandbox", project: str, region: str | None, metric: str) -> tuple[float, float]:
    """(limit, usage) of a Compute quota metric: regional when `region` is given, else project-wide.

    `project` is the project id as GKE knows it. A metric the sandbox has no default for reads as
    limit 0 unless set with `PUT /sandbox/quotas`, as an unrequested accelerator quota does.
    """
    limit = _limits(sb, project, region).get(metric, 0.0)
    usage = _usage(sb, project)
    used = usage["global"].get(metric, 0.0) if region is None else usage["regions"].get(region, {}).get(metric, 0.0)
    return float(limit), float(used)


def _quotas(sb: "Sandbox", project: str, region: str | None) -> list[dict]:
    usage = _usage(sb, project)
    used = usage["global"] if region is None else usage["regions"].get(region, {})
    return [{"metric": m, "limit": float(lim), "usage": float(used.get(m, 0.0))}
            for m, lim in sorted(_limits(sb, project, region).items())]


def _id(*parts: str) -> str:
    return str(int(hashlib.sha1("/".join(parts).encode()).hexdigest()[:15], 16))





def get_region(sb: "Sandbox", req: Request):
    project, region = req.match["project"], req.match["region"]
    if region not in REGIONS:
        raise ApiError(404, f"The resource 'projects/{project}/regions/{region}' was not found")
    return emit_google(req, compute_v1.Region, {
        "kind": "compute#region", "id": _id(region), "creationTimestamp": "1969-12-31T16:00:00.000-08:00",
        "name": region, "description": region, "status": "UP",
        "zones": [f"{LINK}/projects/{project}/zones/{region}-{z}" for z in REGIONS[region]],
        "quotas": _quotas(sb, project, region),
        "selfLink": f"{LINK}/projects/{project}/regions/{region}", "supportsPzs": False,
    })


def get_project(sb: "Sandbox", req: Request):
    project = req.match["project"]
    from . import serviceusage

    number = serviceusage.project_number(sb, project)
    return emit_google(req, compute_v1.Project, {
        "kind": "compute#project", "id": number, "name": project,
        "creationTimestamp": "2024-01-01T00:00:00.000-08:00",
        "quotas": _quotas(sb, project, None),
        "commonInstanceMetadata": {"kind": "compute#metadata", "fingerprint": "sandbox0000="},
        "defaultServiceAccount": f"{number}-compute@developer.gserviceaccount.com",
        "defaultNetworkTier": "PREMIUM", "xpnProjectStatus": "UNSPECIFIED_XPN_PROJECT_STATUS",
        "selfLink": f"{LINK}/projects/{project}",
        "vmDnsSetting": "ZONAL_ONLY",
    })


ROUTES = [
    Route("GET", r"/compute/v1/projects/(?P<project>[^/]+)/regions/(?P<region>[^/]+)", get_region, "RegionsGet"),
    Route("GET", r"/compute/v1/projects/(?P<project>[^/]+)", get_project, "ProjectsGet"),
]


def admin_set_quota(sb: "Sandbox", req: Request):
    """{project, region? (omit for project-wide), metric, limit}: set one quota limit."""
    body = req.json()
    project, region, metric, limit = body.get("project"), body.get("region"), body.get("metric"), body.get("limit")
    if not isinstance(project, str) or not project or not isinstance(metric, str):
        raise ApiError(400, "a quota needs `project`, `metric` and `limit` (and `region` unless project-wide)")
    if metric not in KNOWN_METRICS:
        raise ApiError(400, f"unknown Compute quota metric {metric!r} (see compute_v1.Quota.Metric)")
    if not isinstance(limit, (int, float)) or limit < 0:
        raise ApiError(400, "`limit` must be a non-negative number")
    if region is not None and region not in REGIONS:
        raise ApiError(400, f"unknown region {region!r}; known: {', '.join(REGIONS)}")
    entry = _state(sb).setdefault(project, {})
    if region is None:
        entry.setdefault("global", {})[metric] = float(limit)
    else:
        entry.setdefault("regions", {}).setdefault(region, {})[metric] = float(limit)
    sb.store.mark()
    lim, used = quota(sb, project, region, metric)
    return {"project": project, "region": region, "metric": metric, "limit": lim, "usage": used}


def admin_get_quotas(sb: "Sandbox", req: Request):
    project = req.param("project") or ""
    region = req.param("region")
    if not project:
        raise ApiError(400, "needs ?project=")
    return {"project": project, "region": region, "quotas": _quotas(sb, project, region)}


ADMIN_ROUTES = [
    Route("PUT", r"/sandbox/quotas", admin_set_quota, "quotas.set"),
    Route("GET", r"/sandbox/quotas", admin_get_quotas, "quotas.get"),
]
