"""Admin verbs on the Google side of the sandbox: project services, Compute quota limits, and paid Compute
resources made by hand (a disk someone created outside any cluster)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..core import ApiError
from ..stores import compute as compute_store
from ..stores import compute_resources
from ..stores import projects
from ..wire.http import Request, Route

if TYPE_CHECKING:
    from ..core import SandboxContext as Sandbox


def admin_set_project(sb: "Sandbox", req: Request):
    """{project, enabled?: [...], number?, billing?: bool, propagation?: seconds, iam_propagation?: seconds}:
    set the project's enabled services exactly (no dependencies), whether it has a billing account, how
    long a newly enabled service still answers SERVICE_DISABLED, and how long a new service account is
    not yet usable ("does not exist")."""
    body = req.json()
    project = body.get("project")
    enabled = body.get("enabled")
    if not isinstance(project, str) or not project or not (enabled is None or isinstance(enabled, list)):
        raise ApiError(400, "needs `project` (id or number); `enabled`, when given, a list of service names")
    bad = [s for s in enabled or [] if not isinstance(s, str) or not projects.SERVICE_RE.match(s)]
    if bad:
        raise ApiError(400, f"not service names: {bad}")
    rec = projects.project_record(sb, project)
    if body.get("number"):
        rec["number"] = str(body["number"])
    if enabled is not None:
        rec["enabled"] = sorted(set(enabled))
    if "billing" in body:
        rec["billing"] = bool(body["billing"])
    if "propagation" in body:
        rec["propagation"] = float(body["propagation"] or 0)
    if "iam_propagation" in body:
        rec["iamPropagation"] = float(body["iam_propagation"] or 0)
    sb.store.mark()
    return rec


def admin_list_projects(sb: "Sandbox", req: Request):
    return {"projects": list(projects.state(sb)["projects"].values())}


def admin_set_quota(sb: "Sandbox", req: Request):
    """{project, region? (omit for project-wide), metric, limit}: set one compute_store.quota limit."""
    body = req.json()
    project, region, metric, limit = body.get("project"), body.get("region"), body.get("metric"), body.get("limit")
    if not isinstance(project, str) or not project or not isinstance(metric, str):
        raise ApiError(400, "a compute_store.quota needs `project`, `metric` and `limit` (and `region` unless project-wide)")
    if metric not in compute_store.KNOWN_METRICS:
        raise ApiError(400, f"unknown Compute compute_store.quota metric {metric!r} (see compute_v1.Quota.Metric)")
    if not isinstance(limit, (int, float)) or limit < 0:
        raise ApiError(400, "`limit` must be a non-negative number")
    if region is not None and region not in compute_store.REGIONS:
        raise ApiError(400, f"unknown region {region!r}; known: {', '.join(compute_store.REGIONS)}")
    entry = compute_store.state(sb).setdefault(project, {})
    if region is None:
        entry.setdefault("global", {})[metric] = float(limit)
    else:
        entry.setdefault("regions", {}).setdefault(region, {})[metric] = float(limit)
    sb.store.mark()
    lim, used = compute_store.quota(sb, project, region, metric)
    return {"project": project, "region": region, "metric": metric, "limit": lim, "usage": used}


def admin_get_quotas(sb: "Sandbox", req: Request):
    project = req.param("project") or ""
    region = req.param("region")
    if not project:
        raise ApiError(400, "needs ?project=")
    return {"project": project, "region": region, "quotas": compute_store.quotas(sb, project, region)}


def admin_put_compute(sb: "Sandbox", req: Request):
    """{project, scope (zones/<z>, regions/<r>, global), name, ...fields}: one disk, address or forwarding rule."""
    body = dict(req.json())
    project, scope, collection = body.pop("project", None), body.pop("scope", None), req.match["collection"]
    if not isinstance(project, str) or not isinstance(scope, str) or not isinstance(body.get("name"), str):
        raise ApiError(400, "needs `project`, `scope` (zones/<zone>, regions/<region> or global) and `name`")
    return compute_resources.put(sb, project, collection, scope, body)


ADMIN_ROUTES = [
    Route("POST", r"/sandbox/compute/(?P<collection>disks|addresses|forwardingRules)", admin_put_compute,
          "compute.resources.put"),
    Route("POST", r"/sandbox/projects", admin_set_project, "projects.set"),
    Route("GET", r"/sandbox/projects", admin_list_projects, "projects.list"),
    Route("PUT", r"/sandbox/quotas", admin_set_quota, "quotas.set"),
    Route("GET", r"/sandbox/quotas", admin_get_quotas, "quotas.get"),
]
