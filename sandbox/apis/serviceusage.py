"""Service Usage v1: which Google APIs a project has enabled.

Enabling a service also enables the services it depends on (a small, illustrative dependency table:
`container` pulls in `compute`, ...), as Google does. Long-running operations are
`google.longrunning.Operation`s named `operations/acat.p2-...`: not done when returned, done at the
first `GET v1/operations/...` (or 5 simulated seconds later), with a `BatchEnableServicesResponse` /
`EnableServiceResponse`; the change lands when the operation is done. Enabling services that are all
enabled already answers Google's `operations/noop.DONE_OPERATION`.

A project whose enabled set lacks `serviceusage.googleapis.com` (set with `POST /sandbox/projects`)
answers every call with Google's 403 SERVICE_DISABLED error, details included.
"""

from __future__ import annotations

import json
import uuid
from typing import TYPE_CHECKING

from google.cloud import service_usage_v1
from google.longrunning import operations_pb2
from google.protobuf import any_pb2, json_format

from ..core import ApiError
from ..stores import projects
from ..wire.google import google_page, parse_google_body, service_disabled
from ..wire.http import Request, Response, Route, fault_error

if TYPE_CHECKING:
    from ..core import SandboxContext as Sandbox


MAX_BATCH = 20

OP_DONE_AFTER_S = 5.0

NOOP_OPERATION = "operations/noop.DONE_OPERATION"

TYPE_PREFIX = "type.googleapis.com/google.api.serviceusage.v1."


def _service_msg(rec: dict, service: str) -> service_usage_v1.Service:
    number = rec["number"]
    return service_usage_v1.Service(
        name=f"projects/{number}/services/{service}", parent=f"projects/{number}",
        config=service_usage_v1.ServiceConfig(name=service, title=projects.title(service)),
        state=(service_usage_v1.State.ENABLED if service in rec["enabled"] else service_usage_v1.State.DISABLED))


def _op_json(req: Request, op: dict, sb: "Sandbox") -> Response:
    pb = operations_pb2.Operation(name=op["name"], done=op["done"])
    meta = service_usage_v1.OperationMetadata(resource_names=op["services"])
    pb.metadata.Pack(service_usage_v1.OperationMetadata.pb(meta))
    if op["done"]:
        rec = projects.project_record(sb, op["project"])
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
    rec = projects.project_record(sb, op["project"])
    enabled = set(rec["enabled"])
    for s in op["services"]:
        enabled.add(s)
        enabled.update(projects.DEPENDENCIES.get(s, ()))
    now = sb.clock.now()
    for s in enabled - set(rec["enabled"]):
        rec.setdefault("enabledAt", {})[s] = now
    rec["enabled"] = sorted(enabled)
    op["done"] = True
    su = projects.state(sb)
    if op["name"] in su["pending"]:
        su["pending"].remove(op["name"])
    sb.store.mark()


def reconcile(sb: "Sandbox") -> None:
    """Finish enable operations older than 5 simulated seconds (cheap when none are pending)."""
    su = projects.state(sb)
    now = sb.clock.now()
    for name in list(su["pending"]):
        op = su["operations"][name]
        if now - op["start"] >= OP_DONE_AFTER_S:
            _finish(sb, op)


def _enable(sb: "Sandbox", req: Request, project: str, services: list[str], kind: str) -> Response:
    if req.fault is not None:  # an injected quota/stockout fault fails the call before it changes anything
        fault, req.fault = req.fault, None
        raise fault_error(fault, "BatchEnableServices" if kind == "batch" else "EnableService")
    rec = projects.project_record(sb, project)
    for s in services:
        if not projects.SERVICE_RE.match(s):
            return _not_found_services(project, [s])
    refusal = projects.billing_refusal(rec, [s for s in services if s not in rec["enabled"]])
    if refusal is not None:
        raise refusal
    if all(s in rec["enabled"] for s in services):
        op = {"name": NOOP_OPERATION, "done": True, "project": project, "services": services, "kind": kind}
        return _op_json(req, op, sb)
    name = f"operations/acat.p2-{rec['number']}-{uuid.uuid4()}"
    op = {"name": name, "done": False, "project": project, "services": services, "kind": kind,
          "start": sb.clock.now()}
    su = projects.state(sb)
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
        rec = projects.project_record(sb, project)
        if projects.SERVICE_USAGE not in rec["enabled"]:
            return service_disabled(rec["number"], projects.SERVICE_USAGE, projects.title(projects.SERVICE_USAGE))
        return handler(sb, req, project, rec)
    wrapped.__name__ = handler.__name__
    wrapped.__doc__ = handler.__doc__
    return wrapped


@_guard
def get_service(sb: "Sandbox", req: Request, project: str, rec: dict):
    service = req.match["service"]
    if not projects.SERVICE_RE.match(service):
        return _not_found_services(project, [service])
    msg = _service_msg(rec, service)
    return Response(200, service_usage_v1.Service.to_json(msg, use_integers_for_enums=req.int_enums, indent=None))


@_guard
def list_services(sb: "Sandbox", req: Request, project: str, rec: dict):
    flt = (req.param("filter") or "").replace(" ", "")
    if flt not in ("", "state:ENABLED", "state:DISABLED"):
        raise ApiError(400, f"Invalid filter \"{flt}\": the allowed filters are state:ENABLED and state:DISABLED.")
    known = sorted(set(projects.TITLES) | set(rec["enabled"]))
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
    op = projects.state(sb)["operations"].get(name)
    if op is None:
        raise ApiError(404, f"Operation {name} not found.")
    _finish(sb, op)
    return _op_json(req, op, sb)


def list_operations(sb: "Sandbox", req: Request):
    reconcile(sb)
    ops = list(projects.state(sb)["operations"].values())
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
