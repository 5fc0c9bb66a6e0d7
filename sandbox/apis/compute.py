"""Compute Engine v1: quotas (`regions.get`, `projects.get`, limits and usage from `stores.compute`) and the
paid leftovers of a cluster (disks, addresses, forwarding rules: `stores.compute_resources`).

The leftovers are listed the way gcloud lists them, through `aggregated/<collection>` (one entry
per scope, `{"items": {}}` when empty: gcloud fails on a response without `items`), per scope, and
deleted with a zonal, regional or global Operation that is DONE at once (gcloud polls
`operations/<name>/wait`). https://cloud.google.com/compute/docs/reference/rest/v1/disks/aggregatedList
Nothing else of Compute Engine exists here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from google.cloud import compute_v1

from ..core import ApiError
from ..stores import compute_resources as resources
from ..stores import projects
from ..stores.compute import REGIONS, quotas
from ..stores.compute_resources import LINK
from ..wire.google import emit_google
from ..wire.http import Request, Route

if TYPE_CHECKING:
    from ..core import SandboxContext as Sandbox


def get_region(sb: "Sandbox", req: Request):
    project, region = req.match["project"], req.match["region"]
    if region not in REGIONS:
        raise ApiError(404, f"The resource 'projects/{project}/regions/{region}' was not found")
    return emit_google(req, compute_v1.Region, {
        "kind": "compute#region", "id": resources.resource_id(region), "creationTimestamp": "1969-12-31T16:00:00.000-08:00",
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

def aggregated_list(sb: "Sandbox", req: Request):
    project, collection = req.match["project"], req.match["collection"]
    scopes = {scope: {collection: list(found.values())} for scope, found in
              sorted(resources.items(sb, project, collection).items()) if found}
    return {"kind": resources.KINDS[collection] + "AggregatedList", "id": f"projects/{project}/aggregated/{collection}",
            "items": scopes, "selfLink": f"{LINK}/projects/{project}/aggregated/{collection}"}


def scoped_list(sb: "Sandbox", req: Request):
    project, collection, scope = req.match["project"], req.match["collection"], _scope(req)
    found = list(resources.items(sb, project, collection).get(scope, {}).values())
    return {"kind": resources.KINDS[collection] + "List", "items": found,
            "selfLink": f"{resources.scope_link(project, scope)}/{collection}"}


def _scope(req: Request) -> str:
    where = req.match.get("where")
    return f"{where}/{req.match['place']}" if where else "global"


def get_resource(sb: "Sandbox", req: Request):
    project, collection, scope, name = req.match["project"], req.match["collection"], _scope(req), req.match["name"]
    found = resources.items(sb, project, collection).get(scope, {}).get(name)
    if found is None:
        raise ApiError(404, f"The resource 'projects/{project}/{scope}/{collection}/{name}' was not found")
    return found


def delete_resource(sb: "Sandbox", req: Request):
    project, collection, scope, name = req.match["project"], req.match["collection"], _scope(req), req.match["name"]
    found = resources.remove(sb, project, collection, scope, name)
    if found is None:
        raise ApiError(404, f"The resource 'projects/{project}/{scope}/{collection}/{name}' was not found")
    op_name = f"operation-{int(sb.clock.now() * 1000)}-{resources.resource_id(scope, name)[:8]}"
    op = {"kind": "compute#operation", "id": resources.resource_id(op_name), "name": op_name, "operationType": "delete",
          "targetLink": found["selfLink"], "targetId": found["id"], "status": "DONE", "progress": 100,
          "insertTime": sb.clock.rfc3339(), "startTime": sb.clock.rfc3339(), "endTime": sb.clock.rfc3339(),
          "selfLink": f"{resources.scope_link(project, scope)}/operations/{op_name}"}
    if scope != "global":
        op[scope.split("/")[0][:-1]] = resources.scope_link(project, scope)
    sb.store.section("compute").setdefault("operations", {})[op["selfLink"]] = op
    return op


def get_operation(sb: "Sandbox", req: Request):
    project, scope, name = req.match["project"], _scope(req), req.match["name"]
    link = f"{resources.scope_link(project, scope)}/operations/{name}"
    op = sb.store.section("compute").setdefault("operations", {}).get(link)
    if op is None:
        raise ApiError(404, f"The resource 'projects/{project}/{scope}/operations/{name}' was not found")
    return op


_PROJECT = r"/compute/v1/projects/(?P<project>[^/]+)"
_COLLECTION = r"(?P<collection>disks|addresses|forwardingRules)"
_SCOPE = r"(?:/(?P<where>zones|regions)/(?P<place>[^/]+)|/global)"

ROUTES = [
    Route("GET", _PROJECT + r"/aggregated/" + _COLLECTION, aggregated_list, "AggregatedList"),
    Route("GET", _PROJECT + _SCOPE + "/" + _COLLECTION, scoped_list, "List"),
    Route("GET", _PROJECT + _SCOPE + "/" + _COLLECTION + r"/(?P<name>[^/]+)", get_resource, "Get"),
    Route("DELETE", _PROJECT + _SCOPE + "/" + _COLLECTION + r"/(?P<name>[^/]+)", delete_resource, "Delete", True),
    Route("GET", _PROJECT + _SCOPE + r"/operations/(?P<name>[^/]+)", get_operation, "OperationsGet"),
    Route("POST", _PROJECT + _SCOPE + r"/operations/(?P<name>[^/]+)/wait", get_operation, "OperationsWait"),
    Route("GET", _PROJECT + r"/regions/(?P<region>[^/]+)", get_region, "RegionsGet"),
    Route("GET", _PROJECT, get_project, "ProjectsGet"),
]
