"""Kubernetes REST conventions, as kube-apiserver speaks them to client-go, kubectl and the Python client.

`Status` error bodies with the reason for each code, the resource a URL names (`ResourceType`),
request bodies (JSON, YAML for apply, protobuf for the built-in kinds kubectl sends that way), the
common query parameters (`dryRun`, `fieldManager`) and JSON answers serialised under the state lock.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import yaml

from ..core import ApiError
from . import kubeproto
from .http import Request, Response
from .kubeproto import PROTOBUF

try:  # the C loader is ten times faster; fall back when PyYAML was built without libyaml
    YamlLoader = yaml.CSafeLoader
except AttributeError:  # pragma: no cover
    YamlLoader = yaml.SafeLoader


@dataclass(frozen=True)
class ResourceType:
    group: str  # "" for the core group
    version: str
    plural: str
    kind: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()
    # The verbs discovery lists; () means the usual eight. A create-only kind is a review: the server
    # answers it and stores nothing (SelfSubjectAccessReview, SelfSubjectReview).
    verbs: tuple[str, ...] = ()

    @property
    def virtual(self) -> bool:
        return self.verbs == ("create",)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def singular(self) -> str:
        return self.kind.lower()


# Kubernetes `Status.reason` for each HTTP code the sandbox answers with.
REASONS = {
    400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 405: "MethodNotAllowed",
    406: "NotAcceptable", 409: "Conflict", 410: "Expired", 415: "UnsupportedMediaType", 422: "Invalid",
    429: "TooManyRequests", 500: "InternalError", 503: "ServiceUnavailable", 504: "Timeout",
}

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"


class KubeError(ApiError):
    """An ApiError with a `Status.details` (conflict causes, the object's name and kind)."""

    def __init__(self, code: int, message: str, reason: str | None = None, details: dict | None = None):
        super().__init__(code, message, reason=reason)
        self.details = details


def render_error(err: ApiError) -> Response:
    """A `Status` body, as kube-apiserver answers every failure."""
    body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": err.message,
            "reason": err.reason or REASONS.get(err.code, "Unknown"), "code": err.code}
    details = getattr(err, "details", None)
    if details:
        body["details"] = details
    return Response(err.code, body)


def json_response(obj: Any, status: int = 200) -> Response:
    # Serialised here, under the state lock: live objects need no defensive copy.
    return Response(status, json.dumps(obj, separators=(",", ":")).encode())


def status_success(rt: ResourceType, obj: dict) -> dict:
    meta = obj.get("metadata", {})
    details = {"name": meta.get("name"), "kind": rt.plural, "uid": meta.get("uid")}
    if rt.group:
        details["group"] = rt.group
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}


def group_resource(rt: ResourceType) -> str:
    """`configmaps`, `deployments.apps`: how the API server names a resource in messages."""
    return f"{rt.plural}.{rt.group}" if rt.group else rt.plural


def not_found(rt: ResourceType, name: str) -> KubeError:
    details = {"name": name, "kind": rt.plural}
    if rt.group:
        details["group"] = rt.group
    return KubeError(404, f'{group_resource(rt)} "{name}" not found', "NotFound", details)


def bad_request(message: str) -> ApiError:
    return ApiError(400, message, reason="BadRequest")


def invalid(message: str) -> ApiError:
    return ApiError(422, message, reason="Invalid")


def truthy(value: str | None) -> bool:
    return (value or "").lower() in ("true", "1", "yes")


def dry_run(req: Request) -> bool:
    values = req.params.get("dryRun") or []
    for v in values:
        if v != "All":
            raise bad_request(f'dryRun: Unsupported value: "{v}": supported values: "All"')
    return bool(values)


def manager_of(req: Request) -> str:
    """The field manager of a non-apply write: `fieldManager`, else the User-Agent's product."""
    manager = req.param("fieldManager")
    if manager:
        return manager
    agent = req.headers.get("User-Agent") or "unknown"
    return agent.split("/", 1)[0] or "unknown"


def parse_body(req: Request, allow_yaml: bool = False) -> Any:
    if not req.body:
        raise bad_request("the request body is empty; an object was expected")
    try:
        return json.loads(req.body)
    except (ValueError, UnicodeDecodeError) as exc:
        if not allow_yaml:
            raise bad_request(f"error decoding the request body as JSON: {exc}") from None
    try:
        return yaml.load(req.body, Loader=YamlLoader)
    except yaml.YAMLError as exc:
        raise bad_request(f"error decoding the request body as YAML or JSON: {exc}") from None


def body_object(req: Request) -> dict:
    """The object of a POST or PUT: JSON, YAML when the Content-Type says so, or protobuf for the
    built-in kinds kubectl sends that way (`kubeproto`)."""
    ctype = req.content_type
    if ctype == PROTOBUF:
        try:
            return kubeproto.decode(req.body)
        except kubeproto.ProtobufError as exc:
            raise ApiError(415, f"the body of the request was in an unknown format: {exc}",
                           reason="UnsupportedMediaType") from None
    if ctype not in ("", "application/json", "application/yaml", "*/*"):
        raise ApiError(415, f'the body of the request was in an unknown format - accepted media types include: '
                            f'application/json, application/yaml, {PROTOBUF} (got "{ctype}")',
                       reason="UnsupportedMediaType")
    body = parse_body(req, allow_yaml=ctype == "application/yaml")
    if not isinstance(body, dict):
        raise bad_request(f"the request body must be an object, got {type(body).__name__}")
    if not isinstance(body.setdefault("metadata", {}), dict):
        raise bad_request("metadata must be an object")
    return body
