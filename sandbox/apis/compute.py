"""Compute Engine v1, quotas only: `regions.get` and `projects.get` (limits and usage from `stores.compute`).

Nothing else of Compute Engine exists here.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from google.cloud import compute_v1

from ..core import ApiError
from ..stores import projects
from ..stores.compute import REGIONS, quotas
from ..wire.google import emit_google
from ..wire.http import Request, Route

if TYPE_CHECKING:
    from ..core import SandboxContext as Sandbox


LINK = "https://www.googleapis.com/compute/v1"


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
        "quotas": quotas(sb, project, region),
        "selfLink": f"{LINK}/projects/{project}/regions/{region}", "supportsPzs": False,
    })


def get_project(sb: "Sandbox", req: Request):
    project = req.match["project"]
    number = projects.project_number(sb, project)
    return emit_google(req, compute_v1.Project, {
        "kind": "compute#project", "id": number, "name": project,
        "creationTimestamp": "2024-01-01T00:00:00.000-08:00",
        "quotas": quotas(sb, project, None),
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
