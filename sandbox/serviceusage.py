"""Service Usage v1: which Google APIs a project has enabled.

Simulation: a project is a record in the sandbox state (`serviceusage` section) holding its number
and its set of enabled services; there is no billing, IAM or propagation delay. Projects spring into
existence on first use with `serviceusage.googleapis.com` and `cloudresourcemanager.googleapis.com`
enabled (as a new GCP project has them). Enabling a service also enables the services it depends on
(a small, illustrative dependency table: `container` pulls in `compute`, ...), as Google does.

Long-running operations are `google.longrunning.Operation`s named `operations/acat.p2-...`: not done
when returned, done at the first `GET v1/operations/...` (or 5 simulated seconds later), with a
`BatchEnableServicesResponse` / `EnableServiceResponse`; the change lands when the operation is
done. Enabling services that are all enabled already answers Google's `operations/noop.DONE_OPERATION`.

A project whose enabled set lacks `serviceusage.googleapis.com` (set with `POST /sandbox/projects`)
answers every call with Google's 403 SERVICE_DISABLED error, details included.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from typing import TYPE_CHECKING

from google.cloud import service_usage_v1
from google.longrunning import operations_pb2
from google.protobuf import any_pb2, json_format

from .core import ApiError
from .http import Request, Response, Route, fault_error, google_page, parse_google_body

if TYPE_CHECKING:
    from .app import Sandbox

SERVICE_USAGE = "serviceusage.googleapis.com"
DEFAULT_ENABLED = (SERVICE_USAGE, "cloudresourcemanager.googleapis.com")
MAX_BATCH = 20
OP_DONE_AFTER_S = 5.0
NOOP_OPERATION = "operations/noop.DONE_OPERATION"
TYPE_PREFIX = "type.googleapis.com/google.api.serviceusage.v1."

# Titles of the services a GPU platform talks about; any other `*.googleapis.com` name is accepted
# with a title made from its name.
TITLES = {
    "artifactregistry.googleapis.com": "Artifact Registry API",
    "autoscaling.googleapis.com": "Cloud Autoscaling API",
    "certificatemanager.googleapis.com": "Certificate Manager API",
    "cloudbilling.googleapis.com": "Cloud Billing API",
    "cloudresourcemanager.googleapis.com": "Cloud Resource Manager API",
    "compute.googleapis.com": "Compute Engine API",
    "container.googleapis.com": "Kubernetes Engine API",
    "containerfilesystem.googleapis.com": "Container File System API",
    "dns.googleapis.com": "Cloud DNS API",
    "iam.googleapis.com": "Identity and Access Management (IAM) API",
    "iamcredentials.googleapis.com": "IAM Service Account Credentials API",
    "logging.googleapis.com": "Cloud Logging API",
    "monitoring.googleapis.com": "Cloud Monitoring API",
    "oslogin.googleapis.com": "Cloud OS Login API",
    "secretmanager.googleapis.com": "Secret Manager API",
    "serviceusage.googleapis.com": "Service Usage API",
    "storage.googleapis.com": "Cloud Storage API",
    "sts.googleapis.com": "Security Token Service API",
}
# Illustrative subset of what Google enables alongside a service.
DEPENDENCIES = {
    "container.googleapis.com": ("compute.googleapis.com", "iam.googleapis.com", "iamcredentials.googleapis.com",
                                 "oslogin.googleapis.com", "artifactregistry.googleapis.com",
                                 "autoscaling.googleapis.com", "containerfilesystem.googleapis.com"),
    "compute.googleapis.com": ("oslogin.googleapis.com",),
}
SERVICE_RE = re.compile(r"^[a-z0-9][a-z0-9.-]*\.googleapis\.com$")


# ---- projects ----------------------------------------------------------------------------------------
def _state(sb: "Sandbox") -> dict:
    su = sb.store.section("serviceusage")
    if "projects" not in su:
        su.update({"projects": {}, "operations": {}, "pending": []})
    return su


def _derived_number(project_id: str) -> str:
    return str(100000000000 + int(hashlib.sha256(project_id.encode()).hexdigest(), 16) % 900000000000)


def project_record(sb: "Sandbox", project: str) -> dict:
    """The sandbox project behind a project id or number (`my-proj`, `123`, `projects/my-proj`).

    Created on first use: number derived from the id (stable across restarts), the default services
    enabled. Returns the stored dict `{"id", "number", "enabled": [...]}`.
    """
    project = project.removeprefix("projects/")
    projects = _state(sb)["projects"]
    rec = projects.get(project)
    if rec is not None:
        return rec
    if project.isdigit():
        for r in projects.values():
            if r["number"] == project:
                return r
    rec = {"id": project, "number": project if project.isdigit() else _derived_number(project),
           "enabled": sorted(DEFAULT_ENABLED)}
    projects[project] = rec
    sb.store.mark()
    return rec


def project_number(sb: "Sandbox", project: str) -> str:
    """The project number Google puts in resource names (Service Usage, Secret Manager) for an id or number."""
    return project_record(sb, project)["number"]


def is_enabled(sb: "Sandbox", project: str, service: str) -> bool:
    """Whether `service` (e.g. `container.googleapis.com`) is enabled in the project."""
    return service in project_record(sb, project)["enabled"]


def service_disabled_response(project: str, service: str, title: str | None = None) -> Response:
    """Google's 403 for a call to an API the project has not enabled (ErrorInfo SERVICE_DISABLED)."""
    title = title or TITLES.get(service) or _title(service)
    url = f"https://console.developers.google.com/apis/api/{service}/overview?project={project}"
    message = (f"{title} has not been used in project {project} before or it is disabled. Enable it by visiting "
               f"{url} then retry. If you enabled this API recently, wait a few minutes for the action to "
               f"propagate to our systems and retry.")
    return Response(403, {"error": {
        "code": 403, "message": message, "status": "PERMISSION_DENIED",
        "details": [
            {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "SERVICE_DISABLED",
             "domain": "googleapis.com",
             "metadata": {"service": service, "consumer": f"projects/{project}", "activationUrl": url,
                          "serviceTitle": title, "containerInfo": project}},
            {"@type": "type.googleapis.com/google.rpc.LocalizedMessage", "locale": "en-US", "message": message},
            {"@type": "type.googleapis.com/google.rpc.Help",
             "links": [{"description": "Google developers console API activation", "url": url}]},
        ],
    }})


def _title(service: str) -> str:
    return TITLES.get(service) or service.split(".")[0].replace("-", " ").title() + " API"


# ---- operations ------------------------------------------------------------------------------------------
def _service_msg(rec: dict, service: str) -> service_usage_v1.Service:
    number = rec["number"]
    return service_usage_v1.Service(
        name=f"projects/{number}/services/{service}", parent=f"projects/{number}",
        config=service_usage_v1.ServiceConfig(name=service, title=_title(service)),
        state=(service_usage_v1.State.ENABLED if service in rec["enabled"] else service_usage_v1.State.DISABLED))


def _op_json(req: Request, op: dict, sb: "Sandbox") -> Response:
    pb = operations_pb2.Operation(name=op["name"], done=op["done"])
    meta = service_usage_v1.OperationMetadata(resource_names=op["services"])
    pb.metadata.Pack(service_usage_v1.OperationMetadata.pb(meta))
    if op["done"]:
        rec = project_record(sb, op["project"])
        services = [_service_msg(rec, s) for s in op["services"]]
        if op["kind"] == "batch":
            resp = service_usage_v1.BatchEnableServicesResponse(services=services)
            packed = service_usage_v1.BatchEnableServicesResponse.pb(resp)
        else:
            resp = service_usage_v1.EnableServiceResponse(service=services[0])
            packed = service_usage_v1.EnableServiceResponse.pb(resp)
        any_msg = any_pb2.Any()
        any_msg.Pack(packed)
        pb.response.CopyFrom(any_msg)
    return Response(200, json_format.MessageToJson(pb, use_integers_for_enums=req.int_enums, indent=None))


def _finish(sb: "Sandbox", op: dict) -> None:
    if op["done"]:
        return
    rec = project_record(sb, op["project"])
    enabled = set(rec["enabled"])
    for s in op["services"]:
        enabled.add(s)
        enabled.update(DEPENDENCIES.get(s, ()))
    rec["enabled"] = sorted(enabled)
    op["done"] = True
    su = _state(sb)
    if op["name"] in su["pending"]:
        su["pending"].remove(op["name"])
    sb.store.mark()


def reconcile(sb: "Sandbox") -> None:
    """Finish enable operations older than 5 simulated seconds (cheap when none are pending)."""
    su = _state(sb)
    now = sb.clock.now()
    for name in list(su["pending"]):
        op = su["operations"][name]
        if now - op["start"] >= OP_DONE_AFTER_S:
            _finish(sb, op)


def _enable(sb: "Sandbox", req: Request, project: str, services: list[str], kind: str) -> Response:
    if req.fault is not None:  # an injected quota/stockout fault fails the call before it changes anything
        fault, req.fault = req.fault, None
        raise fault_error(fault, "BatchEnableServices" if kind == "batch" else "EnableService")
    rec = project_record(sb, project)
    for s in services:
        if not SERVICE_RE.match(s):
            return _not_found_services(project, [s])
    if all(s in rec["enabled"] for s in services):
        op = {"name": NOOP_OPERATION, "done": True, "project": project, "services": services, "kind": kind}
        return _op_json(req, op, sb)
    name = f"operations/acat.p2-{rec['number']}-{uuid.uuid4()}"
    op = {"name": name, "done": False, "project": project, "services": services, "kind": kind,
          "start": sb.clock.now()}
    su = _state(sb)
    su["operations"][name] = op
    su["pending"].append(name)
    sb.store.mark()
    return _op_json(req, op, sb)


def _not_found_services(project: str, services: list[str]) -> Response:
    message = f"Not found or permission denied for service(s): {', '.join(services)}."
    return Response(403, {"error": {"code": 403, "message": message, "status": "PERMISSION_DENIED", "details": [
        {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "SERVICE_CONFIG_NOT_FOUND_OR_PERMISSION_DENIED",
         "domain": "serviceusage.googleapis.com", "metadata": {"services": ",".join(services)}}]}})


def _guard(handler):
    """Every project-scoped call first checks that the project has Service Usage itself enabled."""
    def wrapped(sb: "Sandbox", req: Request):
        reconcile(sb)
        if req.match.get("ptype", "projects") != "projects":
            raise ApiError(400, f"Only projects are supported as consumers, got {req.match['ptype']}/.")
        project = req.match["project"]
        rec = project_record(sb, project)
        if SERVICE_USAGE not in rec["enabled"]:
            return service_disabled_response(project, SERVICE_USAGE)
        return handler(sb, req, project, rec)
    wrapped.__name__ = handler.__name__
    wrapped.__doc__ = handler.__doc__
    return wrapped




# ---- handlers -----------------------------------------------------------------------------------------
@_guard
def get_service(sb: "Sandbox", req: Request, project: str, rec: dict):
    service = req.match["service"]
    if not SERVICE_RE.match(service):
        return _not_found_services(project, [service])
    msg = _service_msg(rec, service)
    return Response(200, service_usage_v1.Service.to_json(msg, use_integers_for_enums=req.int_enums, indent=None))





@_guard
def list_services(sb: "Sandbox", req: Request, project: str, rec: dict):
    flt = (req.param("filter") or "").replace(" ", "")
    if flt not in ("", "state:ENABLED", "state:DISABLED"):
        raise ApiError(400, f"Invalid filter \"{flt}\": the allowed filters are state:ENABLED and state:DISABLED.")
    known = sorted(set(TITLES) | set(rec["enabled"]))
    if flt == "state:ENABLED":
        names = [s for s in known if s in rec["enabled"]]
    elif flt == "state:DISABLED":
        names = [s for s in known if s not in rec["enabled"]]
    else:
        names = known
    chunk, token = google_page(req, names, 50, 200)
    resp = service_usage_v1.ListServicesResponse(services=[_service_msg(rec, s) for s in chunk],
                                                 next_page_token=token)
    return Response(200, service_usage_v1.ListServicesResponse.to_json(
        resp, use_integers_for_enums=req.int_enums, indent=None))


@_guard
def batch_get_services(sb: "Sandbox", req: Request, project: str, rec: dict):
    names = [n.rsplit("/", 1)[-1] for n in req.params.get("names", [])]
    if not names or len(names) > 30:
        raise ApiError(400, "Between 1 and 30 service names must be given.")
    resp = service_usage_v1.BatchGetServicesResponse(services=[_service_msg(rec, s) for s in names])
    return Response(200, service_usage_v1.BatchGetServicesResponse.to_json(
        resp, use_integers_for_enums=req.int_enums, indent=None))


@_guard
def batch_enable(sb: "Sandbox", req: Request, project: str, rec: dict):
    body = parse_google_body(req, service_usage_v1.BatchEnableServicesRequest)
    ids = body.get("serviceIds", [])
    if not ids:
        raise ApiError(400, "service_ids must not be empty.")
    if len(ids) > MAX_BATCH:
        raise ApiError(400, f"The number of services in a batch enable request ({len(ids)}) exceeds the "
                            f"maximum of {MAX_BATCH}.")
    return _enable(sb, req, project, list(dict.fromkeys(ids)), "batch")


@_guard
def enable(sb: "Sandbox", req: Request, project: str, rec: dict):
    return _enable(sb, req, project, [req.match["service"]], "single")


@_guard
def disable(sb: "Sandbox", req: Request, project: str, rec: dict):
    raise ApiError(400, "Disabling services is not simulated by the sandbox (gpuplat never disables an API).",
                   status="FAILED_PRECONDITION")


def get_operation(sb: "Sandbox", req: Request):
    reconcile(sb)
    name = f"operations/{req.match['operation']}"
    if name == NOOP_OPERATION:
        return Response(200, {"name": name, "done": True})
    op = _state(sb)["operations"].get(name)
    if op is None:
        raise ApiError(404, f"Operation {name} not found.")
    _finish(sb, op)
    return _op_json(req, op, sb)


def list_operations(sb: "Sandbox", req: Request):
    reconcile(sb)
    ops = list(_state(sb)["operations"].values())
    out = [json.loads(_op_json(req, op, sb).body) for op in ops]
    return {"operations": out}


_PARENT = r"/v1/(?P<ptype>[^/]+)/(?P<project>[^/]+)"
ROUTES = [
    Route("POST", _PARENT + r"/services:batchEnable", batch_enable, "BatchEnableServices", True),
    Route("GET", _PARENT + r"/services:batchGet", batch_get_services, "BatchGetServices"),
    Route("GET", _PARENT + r"/services", list_services, "ListServices"),
    Route("POST", _PARENT + r"/services/(?P<service>[^/:]+):enable", enable, "EnableService", True),
    Route("POST", _PARENT + r"/services/(?P<service>[^/:]+):disable", disable, "DisableService", True),
    Route("GET", _PARENT + r"/services/(?P<service>[^/:]+)", get_service, "GetService"),
    Route("GET", r"/v1/operations/(?P<operation>[^/]+)", get_operation, "GetOperation"),
    Route("GET", r"/v1/operations", list_operations, "ListOperations"),
]


# ---- admin ---------------------------------------------------------------------------------------------
def admin_set_project(sb: "Sandbox", req: Request):
    """{project, enabled: [...], number?}: set the project's enabled services exactly (no dependencies)."""
    body = req.json()
    project = body.get("project")
    enabled = body.get("enabled")
    if not isinstance(project, str) or not project or not isinstance(enabled, list):
        raise ApiError(400, "needs `project` (id or number) and `enabled` (a list of service names)")
    bad = [s for s in enabled if not isinstance(s, str) or not SERVICE_RE.match(s)]
    if bad:
        raise ApiError(400, f"not service names: {bad}")
    rec = project_record(sb, project)
    if body.get("number"):
        rec["number"] = str(body["number"])
    rec["enabled"] = sorted(set(enabled))
    sb.store.mark()
    return rec


def admin_list_projects(sb: "Sandbox", req: Request):
    return {"projects": list(_state(sb)["projects"].values())}


ADMIN_ROUTES = [
    Route("POST", r"/sandbox/projects", admin_set_project, "projects.set"),
    Route("GET", r"/sandbox/projects", admin_list_projects, "projects.list"),
]
