"""The Kubernetes API's objects: CRUD on built-in kinds and on custom resources whose
CustomResourceDefinition exists, the four PATCH flavours, server-side apply, optimistic concurrency on
`metadata.resourceVersion`, `dryRun=All`, and the `status` and `pods/log` subresources.

Every state change goes through `KubeStore`, under the sandbox's one lock, so concurrent clients
see a consistent, linearisable state. Responses are serialised under that lock, so live objects are
handed out without copies.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..core import ApiError
from ..stores.kube import KubeStore
from ..wire.http import Request, Response, Route
from ..wire.kube import (APPLY_PATCH, JSON_PATCH, MERGE_PATCH, STRATEGIC_PATCH, ResourceType, bad_request,
                         body_object, dry_run, group_resource, json_response, manager_of, not_found, parse_body,
                         status_success, truthy)
from .kube_discovery import (api_group, api_groups, api_versions, core_resources, group_resources, health,
                             openapi_group_version, openapi_root, root_paths, version)
from .kube_fields import encode_fields, leaf_fields, server_side_apply, track_update
from .kube_patch import json_patch, merge_patch, strategic_merge_patch
from .kube_select import select
from .kube_subresources import get_scale, patch_scale, review, set_scale
from .kube_tables import table, wants_table
from .kube_watch import watch
from .kube_writes import (check_identity, check_kind, delete_cascade, finish_update, normalize, prepare_new,
                          require_namespace, resource_of)

if TYPE_CHECKING:
    from ..core import SandboxContext as Sandbox


PROTECTED_NAMESPACES = ("default", "kube-system", "kube-public")


def list_objects(sb: "Sandbox", req: Request):
    store, rt, namespace = resource_of(sb, req, item=False)
    items = select(store, rt, namespace, req)
    if truthy(req.param("watch")):
        return watch(sb, req, store, rt, namespace, items)
    rv = str(store.data["rv"])
    if wants_table(req):
        return json_response(table(store, rt, items, req, rv))
    return json_response({"kind": rt.kind + "List", "apiVersion": rt.api_version,
                          "metadata": {"resourceVersion": rv}, "items": items})


def get_object(sb: "Sandbox", req: Request):
    store, rt, namespace = resource_of(sb, req, item=True)
    name = req.match["name"]
    obj = store.get_object(rt.group, rt.plural, namespace, name)
    if obj is None:
        raise not_found(rt, name)
    if wants_table(req):
        return json_response(table(store, rt, [obj], req, obj["metadata"].get("resourceVersion", "")))
    return json_response(obj)


def create_object(sb: "Sandbox", req: Request):
    store, rt, namespace = resource_of(sb, req, item=False)
    if rt.virtual:
        body = body_object(req)
        check_kind(rt, body)
        return review(req, rt, body, sb.clock.rfc3339())
    if rt.namespaced and namespace is None:
        raise ApiError(405, f"{rt.kind} objects are created in a namespace: POST to "
                            f".../namespaces/<namespace>/{rt.plural}", reason="MethodNotAllowed")
    dry = dry_run(req)
    body = body_object(req)
    check_kind(rt, body)
    check_identity(rt, body, None, namespace)
    if body["metadata"].get("resourceVersion"):
        raise bad_request("resourceVersion should not be set on objects to be created")
    if rt.namespaced:
        require_namespace(store, namespace)
    prepare_new(store, rt, body)
    normalize(rt, body)
    body["metadata"].pop("managedFields", None)
    track_update(None, body, rt, manager_of(req), sb.clock.rfc3339())
    obj = store.create(rt, body, namespace, dry_run=dry)
    return json_response(obj, 201)


def replace_object(sb: "Sandbox", req: Request):
    store, rt, namespace = resource_of(sb, req, item=True)
    name = req.match["name"]
    dry = dry_run(req)
    body = body_object(req)
    check_kind(rt, body)
    check_identity(rt, body, name, namespace)
    current = store.get_object(rt.group, rt.plural, namespace, name)
    if current is None:
        raise not_found(rt, name)
    body["metadata"].pop("managedFields", None)
    obj = finish_update(store, rt, current, body, body["metadata"].get("resourceVersion"), dry, manager_of(req))
    return json_response(obj)


def _patched(req: Request, rt: ResourceType, current: dict) -> dict:
    ctype = req.content_type
    if ctype not in (JSON_PATCH, MERGE_PATCH, STRATEGIC_PATCH):
        raise ApiError(415, f'the body of the request was in an unknown format - accepted media types include: '
                            f'{JSON_PATCH}, {MERGE_PATCH}, {STRATEGIC_PATCH}, {APPLY_PATCH} (got "{ctype}")',
                       reason="UnsupportedMediaType")
    doc = parse_body(req)
    if ctype == JSON_PATCH:
        if not isinstance(doc, list):
            raise bad_request("a JSON patch (application/json-patch+json) must be a list of operations")
        return json_patch(current, doc)
    if not isinstance(doc, dict):
        raise bad_request(f"a {ctype} body must be an object")
    if ctype == MERGE_PATCH:
        return merge_patch(current, doc)
    return strategic_merge_patch(current, doc)


def patch_object(sb: "Sandbox", req: Request):
    store, rt, namespace = resource_of(sb, req, item=True)
    name = req.match["name"]
    dry = dry_run(req)
    current = store.get_object(rt.group, rt.plural, namespace, name)
    if req.content_type == APPLY_PATCH:
        return _apply(sb, req, store, rt, namespace, name, current, dry)
    if current is None:
        if req.content_type not in (JSON_PATCH, MERGE_PATCH, STRATEGIC_PATCH):
            _patched(req, rt, {})  # 415 before 404, as the real server decides on the type first
        raise not_found(rt, name)
    new = _patched(req, rt, current)
    sent_rv = (new.get("metadata") or {}).get("resourceVersion") if isinstance(new, dict) else None
    if sent_rv == current["metadata"]["resourceVersion"]:
        sent_rv = None
    return json_response(finish_update(store, rt, current, new, sent_rv, dry, manager_of(req)))


def _apply(sb: "Sandbox", req: Request, store: KubeStore, rt: ResourceType, namespace: str | None, name: str,
           current: dict | None, dry: bool, status_only: bool = False):
    manager = req.param("fieldManager")
    if not manager:
        raise bad_request("PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: "
                           "is required for apply patch")
    applied = parse_body(req, allow_yaml=True)
    if not isinstance(applied, dict):
        raise bad_request("an applied configuration must be an object")
    if not isinstance(applied.setdefault("metadata", {}), dict):
        raise bad_request("metadata must be an object")
    check_kind(rt, applied, required=True)
    check_identity(rt, applied, name, namespace)
    if applied["metadata"].get("managedFields"):
        raise bad_request("metadata.managedFields must be nil in an applied configuration")
    now = sb.clock.rfc3339()
    if current is None:
        if status_only:
            raise not_found(rt, name)
        if rt.namespaced:
            require_namespace(store, namespace)
        obj = {k: v for k, v in applied.items()}
        obj["metadata"] = dict(applied["metadata"], name=name)
        prepare_new(store, rt, obj)
        normalize(rt, obj)
        fields = leaf_fields(obj, rt)
        if fields:
            obj["metadata"]["managedFields"] = [{"manager": manager, "operation": "Apply",
                                                 "apiVersion": rt.api_version, "time": now,
                                                 "fieldsType": "FieldsV1", "fieldsV1": encode_fields(fields)}]
        return json_response(store.create(rt, obj, namespace, dry_run=dry), 201)
    sent_rv = applied["metadata"].get("resourceVersion")
    if status_only:
        new = strategic_merge_patch(current, {"status": applied.get("status")})
        return json_response(finish_update(store, rt, current, new, sent_rv, dry, None, status_only=True))
    new = server_side_apply(current, applied, rt, manager, truthy(req.param("force")), now)
    normalize(rt, new)
    new["metadata"]["resourceVersion"] = sent_rv or current["metadata"]["resourceVersion"]
    return json_response(store.replace(rt, new, check_rv=True, dry_run=dry))


def delete_object(sb: "Sandbox", req: Request):
    store, rt, namespace = resource_of(sb, req, item=True)
    name = req.match["name"]
    dry = dry_run(req)
    current = store.get_object(rt.group, rt.plural, namespace, name)
    if current is None:
        raise not_found(rt, name)
    if rt.kind == "Namespace" and rt.group == "" and name in PROTECTED_NAMESPACES:
        raise ApiError(403, f'namespaces "{name}" is forbidden: this namespace may not be deleted', reason="Forbidden")
    options = parse_body(req) if req.body else {}
    pre = options.get("preconditions") if isinstance(options, dict) else None
    if isinstance(pre, dict):
        meta = current["metadata"]
        if pre.get("uid") and pre["uid"] != meta.get("uid") or (
                pre.get("resourceVersion") and pre["resourceVersion"] != meta.get("resourceVersion")):
            raise ApiError(409, f'Operation cannot be fulfilled on {group_resource(rt)} "{name}": the precondition '
                                f"(uid or resourceVersion) does not match the object", reason="Conflict")
    if not dry:
        store.delete(rt, namespace, name)
        delete_cascade(store, rt, current)
    return json_response(status_success(rt, current))


def delete_collection(sb: "Sandbox", req: Request):
    store, rt, namespace = resource_of(sb, req, item=False)
    dry = dry_run(req)
    doomed = select(store, rt, namespace, req)
    if not dry:
        for obj in doomed:
            store.delete(rt, obj["metadata"].get("namespace"), obj["metadata"]["name"])
            delete_cascade(store, rt, obj)
    return json_response({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                  "details": {"kind": rt.plural, **({"group": rt.group} if rt.group else {})}})


def _subresource(sb: "Sandbox", req: Request):
    store, rt, namespace = resource_of(sb, req, item=True)
    sub, name = req.match["sub"], req.match["name"]
    if sub not in rt.subresources:
        raise ApiError(404, "the server could not find the requested resource", reason="NotFound")
    if sub not in ("status", "log", "scale"):
        raise ApiError(404, f"the sandbox does not serve the {rt.plural}/{sub} subresource", reason="NotFound")
    return store, rt, namespace, sub, name, store.get_object(rt.group, rt.plural, namespace, name)


def get_subresource(sb: "Sandbox", req: Request):
    store, rt, namespace, sub, name, current = _subresource(sb, req)
    if current is None:
        raise not_found(rt, name)
    if sub == "log":
        if req.method != "GET":
            raise ApiError(405, "pods/log is read-only", reason="MethodNotAllowed")
        text = store.data["logs"].get(f"{namespace}/{name}", "")
        if isinstance(text, list):
            text = "\n".join(text) + ("\n" if text else "")
        tail = req.param("tailLines")
        if tail and tail.isdigit():
            lines = text.splitlines(keepends=True)
            text = "".join(lines[-int(tail):]) if int(tail) else ""
        return Response(200, text, "text/plain")
    if sub == "scale":
        return get_scale(current)
    return json_response(current)


def update_subresource(sb: "Sandbox", req: Request):
    store, rt, namespace, sub, name, current = _subresource(sb, req)
    if sub not in ("status", "scale"):
        raise ApiError(405, f"{rt.plural}/{sub} is read-only", reason="MethodNotAllowed")
    if current is None:
        raise not_found(rt, name)
    dry = dry_run(req)
    body = body_object(req)
    if sub == "scale":
        return set_scale(store, rt, current, body, dry, manager_of(req))
    check_kind(rt, body)
    check_identity(rt, body, name, namespace)
    return json_response(finish_update(store, rt, current, body, body["metadata"].get("resourceVersion"), dry, None,
                                status_only=True))


def patch_subresource(sb: "Sandbox", req: Request):
    store, rt, namespace, sub, name, current = _subresource(sb, req)
    if sub not in ("status", "scale"):
        raise ApiError(405, f"{rt.plural}/{sub} is read-only", reason="MethodNotAllowed")
    dry = dry_run(req)
    if sub == "scale":
        if current is None:
            raise not_found(rt, name)
        return patch_scale(store, rt, current, lambda scale: _patched(req, rt, scale), dry, manager_of(req))
    if req.content_type == APPLY_PATCH:
        return _apply(sb, req, store, rt, namespace, name, current, dry, status_only=True)
    if current is None:
        raise not_found(rt, name)
    new = _patched(req, rt, current)
    sent_rv = (new.get("metadata") or {}).get("resourceVersion") if isinstance(new, dict) else None
    if sent_rv == current["metadata"]["resourceVersion"]:
        sent_rv = None
    return json_response(finish_update(store, rt, current, new, sent_rv, dry, None, status_only=True))


def _build_routes() -> list[Route]:
    routes = [
        Route("GET", r"/", root_paths, "get:discovery"),
        Route("GET", r"/version", version, "get:version"),
        Route("GET", r"/(?:healthz|livez|readyz)(?:/.+)?", health, "get:health"),
        Route("GET", r"/api", api_versions, "get:discovery"),
        Route("GET", r"/api/v1", core_resources, "get:discovery"),
        Route("GET", r"/apis", api_groups, "get:discovery"),
        Route("GET", r"/apis/(?P<group>[^/]+)", api_group, "get:discovery"),
        Route("GET", r"/apis/(?P<group>[^/]+)/(?P<version>[^/]+)", group_resources, "get:discovery"),
        Route("GET", r"/openapi/v3", openapi_root, "get:openapi"),
        Route("GET", r"/openapi/v3/(?P<gvpath>.+)", openapi_group_version, "get:openapi"),
    ]
    # A Namespace's own subresources come first: /api/v1/namespaces/x/status is not a collection.
    ns_sub = r"/api/(?P<version>v1)/(?P<plural>namespaces)/(?P<name>[^/]+)/(?P<sub>status|finalize)"
    routes += [
        Route("GET", ns_sub, get_subresource, "get:{plural}/{sub}"),
        Route("PUT", ns_sub, update_subresource, "update:{plural}/{sub}", True),
        Route("PATCH", ns_sub, patch_subresource, "patch:{plural}/{sub}", True),
    ]
    for prefix in (r"/api/(?P<version>v1)", r"/apis/(?P<group>[^/]+)/(?P<version>[^/]+)"):
        for collection in (prefix + r"/namespaces/(?P<namespace>[^/]+)/(?P<plural>[^/]+)",
                           prefix + r"/(?P<plural>[^/]+)"):
            item = collection + r"/(?P<name>[^/]+)"
            sub = item + r"/(?P<sub>[^/]+)"
            routes += [
                Route("GET", collection, list_objects, "list:{plural}"),
                Route("POST", collection, create_object, "create:{plural}", True),
                Route("DELETE", collection, delete_collection, "deletecollection:{plural}", True),
                Route("GET", item, get_object, "get:{plural}"),
                Route("PUT", item, replace_object, "update:{plural}", True),
                Route("PATCH", item, patch_object, "patch:{plural}", True),
                Route("DELETE", item, delete_object, "delete:{plural}", True),
                Route("GET", sub, get_subresource, "get:{plural}/{sub}"),
                Route("PUT", sub, update_subresource, "update:{plural}/{sub}", True),
                Route("PATCH", sub, patch_subresource, "patch:{plural}/{sub}", True),
            ]
    return routes

ROUTES = _build_routes()
