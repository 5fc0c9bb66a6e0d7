"""The Kubernetes API server face of the sandbox: one port, one path prefix per cluster.

A sandbox kubeconfig's server is `http://127.0.0.1:PORT/clusters/<cluster id>`; everything under
that prefix is answered the way kube-apiserver v1.33 answers it, for the official clients and
kubectl: `/version`, health endpoints, discovery (`/api`, `/api/v1`, `/apis`, `/apis/<group>`,
`/apis/<group>/<version>`, always in the plain form: the aggregated-discovery Accept header is
answered with `application/json`, which client-go takes as "fall back to the legacy documents"),
CRUD on built-in kinds and on custom resources whose CustomResourceDefinition exists, label and
field selectors, optimistic concurrency on `metadata.resourceVersion`, the four PATCH flavours,
the `status` and `pods/log` subresources, `dryRun=All`, and `Status` error bodies. `/openapi/v3`
serves skeleton documents (operations and their parameters, no schemas): enough for kubectl to see
that the server validates fields itself, so `kubectl apply` and `create` work without
`--validate=false`.

Simplifications, so nobody mistakes them for the real thing:

- **Strategic merge patch** is a merge patch (RFC 7386) in which a list whose items are all
  objects with a `name` merges item by item on `name` (containers, env, volumes, ports, ...),
  honouring the `$patch: delete | replace` directives and `$deleteFromPrimitiveList/<field>`;
  every other list is replaced whole. The real API server reads each field's patch strategy and
  merge key from the Go types (`volumeMounts` merge on `mountPath`, `tolerations` are atomic, ...).
- **Server-side apply** tracks ownership per *leaf* field (maps recurse, lists of named objects
  are associative on `name`, other lists are atomic) and records it as `metadata.managedFields`
  (FieldsV1) entries: `Apply` for each applier, `Update` for other writes (manager from the
  `fieldManager` parameter, else the User-Agent's product name, as the real server does) -- but
  only on objects already under field management (applied once, or drifted through the admin
  API): an object only ever created and updated imperatively carries no managedFields, which keeps
  lists cheap for the Python client, and so cannot conflict with a later first apply. Applying
  a different value to a field another manager owns is a 409 Conflict naming manager and field,
  unless `force=true`, which takes the field over. Fields an applier applied before and omits now
  are removed unless someone else owns them. Status is not tracked, and types are not consulted.
- Writes to a resource that has a `status` subresource keep the live `status`; only
  `.../{name}/status` changes it (as the real server does). Creation keeps the given status.
- Deletion is immediate: no finalizers, no graceful termination, no garbage collection by owner
  references; deleting a Namespace deletes its objects, deleting a CRD deletes its objects.
- `watch=true` answers once with the matching objects newer than `resourceVersion` as `ADDED`
  events and ends the stream; `limit`/`continue` are ignored (every list is one page).
- No admission, no defaulting beyond a Namespace's `Active` phase, a Pod's `Pending` phase, a
  CRD's `Established` condition and a Secret's `stringData` folded into `data`; no schema
  validation.

Every state change goes through `KubeStore`, under the sandbox's one lock, so concurrent clients
see a consistent, linearisable state. Responses are serialised under that lock, so live objects
are handed out without copies.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import re
from typing import TYPE_CHECKING, Any

import yaml

from .core import ApiError
from .http import Request, Response, Route, fault_error
from .kubestore import KubeStore, ResourceType

if TYPE_CHECKING:
    from .app import Sandbox

try:  # the C loader is ten times faster; fall back when PyYAML was built without libyaml
    _YamlLoader = yaml.CSafeLoader
except AttributeError:  # pragma: no cover
    _YamlLoader = yaml.SafeLoader

# What `/version` answers unless a cluster's store sets `meta["gitVersion"]` (GKE-style versions).
DEFAULT_GIT_VERSION = "v1.33.5"

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

VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
SUBRESOURCE_VERBS = {"status": ["get", "patch", "update"], "log": ["get"], "scale": ["get", "patch", "update"]}
PROTECTED_NAMESPACES = ("default", "kube-system", "kube-public")

# Fields a field selector may name: the universal ones, plus the per-kind ones the real server
# supports that platform tooling uses.
FIELD_LABELS: dict[str, tuple[str, ...]] = {
    "*": ("metadata.name", "metadata.namespace"),
    "Pod": ("spec.nodeName", "status.phase", "spec.restartPolicy", "spec.schedulerName",
            "spec.serviceAccountName", "status.podIP", "status.nominatedNodeName"),
    "Event": ("involvedObject.kind", "involvedObject.namespace", "involvedObject.name", "involvedObject.uid",
              "involvedObject.apiVersion", "involvedObject.resourceVersion", "involvedObject.fieldPath",
              "reason", "reportingComponent", "source", "type"),
    "Secret": ("type",),
    "Namespace": ("status.phase",),
    "Node": ("spec.unschedulable",),
}

# Server-owned metadata: never part of a field manager's set, never taken from a client's body.
_SERVER_META = frozenset({"uid", "resourceVersion", "generation", "creationTimestamp", "managedFields",
                          "selfLink", "deletionTimestamp", "deletionGracePeriodSeconds"})
_IDENTITY_META = _SERVER_META | {"name", "namespace"}
_MISSING = object()


class KubeError(ApiError):
    """An ApiError with a `Status.details` (conflict causes, the object's name and kind)."""

    def __init__(self, code: int, message: str, reason: str | None = None, details: dict | None = None):
        super().__init__(code, message, reason=reason)
        self.details = details


# ---- the prefix and the error body -----------------------------------------------------------------

_CLUSTER_PATH = re.compile(r"^/clusters/([^/]+)(/.*)?$")


def resolve_cluster_path(path: str) -> tuple[str, dict[str, str]]:
    """`/clusters/<id>/api/v1/pods` -> (`/api/v1/pods`, {"cluster": id}); else 404."""
    m = _CLUSTER_PATH.match(path)
    if m is None:
        raise ApiError(404, f"the sandbox serves Kubernetes clusters under /clusters/<cluster id>, not {path}",
                       reason="NotFound")
    rest = m.group(2) or "/"
    if len(rest) > 1 and rest.endswith("/"):
        rest = rest.rstrip("/") or "/"
    return rest, {"cluster": m.group(1)}


def render_error(err: ApiError) -> Response:
    """A `Status` body, as kube-apiserver answers every failure."""
    body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": err.message,
            "reason": err.reason or REASONS.get(err.code, "Unknown"), "code": err.code}
    details = getattr(err, "details", None)
    if details:
        body["details"] = details
    return Response(err.code, body)


def _json(obj: Any, status: int = 200) -> Response:
    # Serialised here, under the state lock: live objects need no defensive copy.
    return Response(status, json.dumps(obj, separators=(",", ":")).encode())


def _status_success(rt: ResourceType, obj: dict) -> dict:
    meta = obj.get("metadata", {})
    details = {"name": meta.get("name"), "kind": rt.plural, "uid": meta.get("uid")}
    if rt.group:
        details["group"] = rt.group
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}


def _gr(rt: ResourceType) -> str:
    """`configmaps`, `deployments.apps`: how the API server names a resource in messages."""
    return f"{rt.plural}.{rt.group}" if rt.group else rt.plural


def _not_found(rt: ResourceType, name: str) -> KubeError:
    details = {"name": name, "kind": rt.plural}
    if rt.group:
        details["group"] = rt.group
    return KubeError(404, f'{_gr(rt)} "{name}" not found', "NotFound", details)


def _bad_request(message: str) -> ApiError:
    return ApiError(400, message, reason="BadRequest")


def _invalid(message: str) -> ApiError:
    return ApiError(422, message, reason="Invalid")


# ---- request context ---------------------------------------------------------------------------------


def _store(sb: "Sandbox", req: Request) -> KubeStore:
    cid = req.match["cluster"]
    if cid not in sb.kube_cluster_ids():
        raise ApiError(404, f'sandbox cluster "{cid}" not found', reason="NotFound")
    if req.fault is not None:  # quota / stockout faults have no meaning here: fail before acting
        raise fault_error(req.fault, f"{req.method} {req.path}")
    return sb.kube(cid)


def _resource(sb: "Sandbox", req: Request, item: bool) -> tuple[KubeStore, ResourceType, str | None]:
    """The store, the resource type and the namespace the URL names (404 for unknown ones)."""
    store = _store(sb, req)
    m = req.match
    rt = store.resolve_type(m.get("group", ""), m["version"], m["plural"])
    namespace = m.get("namespace")
    if namespace is not None and not rt.namespaced:
        raise ApiError(404, "the server could not find the requested resource", reason="NotFound")
    if namespace is None and rt.namespaced and item:
        raise ApiError(404, "the server could not find the requested resource", reason="NotFound")
    return store, rt, namespace


def _truthy(value: str | None) -> bool:
    return (value or "").lower() in ("true", "1", "yes")


def _dry_run(req: Request) -> bool:
    values = req.params.get("dryRun") or []
    for v in values:
        if v != "All":
            raise _bad_request(f'dryRun: Unsupported value: "{v}": supported values: "All"')
    return bool(values)


def _manager(req: Request) -> str:
    """The field manager of a non-apply write: `fieldManager`, else the User-Agent's product."""
    manager = req.param("fieldManager")
    if manager:
        return manager
    agent = req.headers.get("User-Agent") or "unknown"
    return agent.split("/", 1)[0] or "unknown"


def _parse_body(req: Request, allow_yaml: bool = False) -> Any:
    if not req.body:
        raise _bad_request("the request body is empty; an object was expected")
    try:
        return json.loads(req.body)
    except (ValueError, UnicodeDecodeError) as exc:
        if not allow_yaml:
            raise _bad_request(f"error decoding the request body as JSON: {exc}") from None
    try:
        return yaml.load(req.body, Loader=_YamlLoader)
    except yaml.YAMLError as exc:
        raise _bad_request(f"error decoding the request body as YAML or JSON: {exc}") from None


def _body_object(req: Request) -> dict:
    """The object of a POST or PUT (JSON, or YAML when the Content-Type says so)."""
    ctype = req.content_type
    if ctype not in ("", "application/json", "application/yaml", "*/*"):
        raise ApiError(415, f'the body of the request was in an unknown format - accepted media types include: '
                            f'application/json, application/yaml (got "{ctype}")', reason="UnsupportedMediaType")
    body = _parse_body(req, allow_yaml=ctype == "application/yaml")
    if not isinstance(body, dict):
        raise _bad_request(f"the request body must be an object, got {type(body).__name__}")
    if not isinstance(body.setdefault("metadata", {}), dict):
        raise _bad_request("metadata must be an object")
    return body


def _check_kind(rt: ResourceType, body: dict, required: bool = False) -> None:
    kind, api_version = body.get("kind"), body.get("apiVersion")
    if required and (not kind or not api_version):
        raise _bad_request("apiVersion and kind must be set in an applied object")
    if kind and kind != rt.kind:
        raise _bad_request(f'the kind in the body ({kind}) does not match the resource ({rt.kind}) of the URL')
    if api_version and api_version != rt.api_version:
        raise _bad_request(f"the API version in the data ({api_version}) does not match the expected API version "
                           f"({rt.api_version})")


def _check_identity(rt: ResourceType, obj: dict, name: str | None, namespace: str | None) -> None:
    meta = obj.get("metadata") or {}
    if name is not None and meta.get("name") not in (None, "", name):
        raise _bad_request(f"the name of the object ({meta.get('name')}) does not match the name on the URL ({name})")
    if rt.namespaced and namespace is not None and meta.get("namespace") not in (None, "", namespace):
        raise _bad_request("the namespace of the provided object does not match the namespace sent on the request")


def _require_namespace(store: KubeStore, namespace: str) -> None:
    if store.get_object("", "namespaces", None, namespace) is None:
        raise KubeError(404, f'namespaces "{namespace}" not found', "NotFound",
                        {"name": namespace, "kind": "namespaces"})


# ---- selectors -------------------------------------------------------------------------------------------

_LABEL_REQ = re.compile(
    r"^\s*(?:(?P<not>!)\s*(?P<nkey>[A-Za-z0-9._/-]+)"
    r"|(?P<key>[A-Za-z0-9._/-]+)\s*(?:(?P<op>==|=|!=|>|<)\s*(?P<value>[A-Za-z0-9._-]*)"
    r"|\s+(?P<setop>in|notin)\s*\((?P<values>[^()]*)\))?)\s*$")
_FIELD_REQ = re.compile(r"^\s*(?P<key>[A-Za-z0-9._]+)\s*(?P<op>==|=|!=)\s*(?P<value>.*?)\s*$")


def _split_top(text: str) -> list[str]:
    """Split on commas outside parentheses (`a in (x,y),b` -> two requirements)."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p for p in parts if p.strip()]


def parse_label_selector(text: str):
    """A predicate over a labels dict for `=`,`==`,`!=`,`in`,`notin`,`key`,`!key`,`>`,`<`."""
    reqs = []
    for part in _split_top(text):
        m = _LABEL_REQ.match(part)
        if m is None:
            raise _bad_request(f'unable to parse requirement: found "{part.strip()}", expected a label selector '
                               f"requirement (key, !key, key=value, key!=value, key in (a,b), key notin (a,b))")
        if m["not"]:
            reqs.append((m["nkey"], "!", None))
        elif m["setop"]:
            values = {v.strip() for v in m["values"].split(",") if v.strip()}
            reqs.append((m["key"], m["setop"], values))
        elif m["op"]:
            reqs.append((m["key"], m["op"], m["value"]))
        else:
            reqs.append((m["key"], "exists", None))

    def matches(labels: dict) -> bool:
        for key, op, value in reqs:
            present = key in labels
            actual = labels.get(key)
            if op == "exists":
                ok = present
            elif op == "!":
                ok = not present
            elif op in ("=", "=="):
                ok = present and actual == value
            elif op == "!=":
                ok = not present or actual != value
            elif op == "in":
                ok = present and actual in value
            elif op == "notin":
                ok = not present or actual not in value
            else:  # > and <: integer comparisons, as the real selector language defines them
                try:
                    ok = present and (int(actual) > int(value) if op == ">" else int(actual) < int(value))
                except ValueError:
                    ok = False
            if not ok:
                return False
        return True

    return matches


def _field_value(obj: dict, dotted: str) -> str:
    cur: Any = obj
    for part in dotted.split("."):
        cur = cur.get(part) if isinstance(cur, dict) else None
        if cur is None:
            return ""
    if isinstance(cur, bool):
        return "true" if cur else "false"
    return str(cur)


def parse_field_selector(text: str, rt: ResourceType):
    """A predicate over an object for `field=value`, `field==value`, `field!=value` terms."""
    allowed = FIELD_LABELS["*"] + FIELD_LABELS.get(rt.kind, ())
    reqs = []
    for part in text.split(","):
        if not part.strip():
            continue
        m = _FIELD_REQ.match(part)
        if m is None:
            raise _bad_request(f'invalid field selector: "{part.strip()}": expected field=value or field!=value')
        if m["key"] not in allowed:
            raise _bad_request(f'field label not supported: {m["key"]}')
        reqs.append((m["key"], m["op"] != "!=", m["value"]))

    def matches(obj: dict) -> bool:
        return all((_field_value(obj, key) == value) == equal for key, equal, value in reqs)

    return matches


def _select(store: KubeStore, rt: ResourceType, namespace: str | None, req: Request) -> list[dict]:
    labels = req.param("labelSelector")
    fields = req.param("fieldSelector")
    label_ok = parse_label_selector(labels) if labels else None
    field_ok = parse_field_selector(fields, rt) if fields else None
    items = []
    for obj in store.list_objects(rt.group, rt.plural, namespace):
        if label_ok is not None and not label_ok(obj["metadata"].get("labels") or {}):
            continue
        if field_ok is not None and not field_ok(obj):
            continue
        items.append(obj)
    # etcd returns keys in order: namespace, then name.
    items.sort(key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]))
    return items


# ---- patches ---------------------------------------------------------------------------------------------


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch. Untouched subtrees are shared with `target`, not copied."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _named_list(items: Any, directives: bool = False) -> bool:
    if not isinstance(items, list) or not items:
        return False
    for item in items:
        if not isinstance(item, dict):
            return False
        if not isinstance(item.get("name"), str) and not (directives and "$patch" in item):
            return False
    return True


def _strip_directives(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_directives(v) for k, v in value.items() if not k.startswith("$")}
    if isinstance(value, list):
        return [_strip_directives(v) for v in value]
    return value


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    """Strategic merge patch, simplified (see the module docstring). Returns None for `$patch: delete`."""
    if not isinstance(patch, dict):
        return _strip_directives(copy.deepcopy(patch))
    directive = patch.get("$patch")
    if directive == "delete":
        return None
    if directive == "replace":
        return _strip_directives(copy.deepcopy(patch))
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith("$"):
            if key.startswith("$deleteFromPrimitiveList/") and isinstance(value, list):
                field = key.split("/", 1)[1]
                if isinstance(result.get(field), list):
                    result[field] = [v for v in result[field] if v not in value]
            continue
        if value is None:
            result.pop(key, None)
        elif isinstance(value, list):
            result[key] = _merge_list(result.get(key), value)
        else:
            merged = strategic_merge_patch(result.get(key), value)
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
    retain = patch.get("$retainKeys")
    if isinstance(retain, list):
        result = {k: v for k, v in result.items() if k in retain}
    return result


def _merge_list(live: Any, items: list) -> list:
    if any(isinstance(i, dict) and i.get("$patch") == "replace" and "name" not in i for i in items):
        return [_strip_directives(copy.deepcopy(i)) for i in items if not (isinstance(i, dict) and "$patch" in i)]
    if not _named_list(items, directives=True) or (live and not _named_list(live)):
        return _strip_directives(copy.deepcopy(items))  # an atomic list: replaced whole
    out = list(live or [])
    for item in items:
        if "name" not in item:
            continue
        pos = next((i for i, cur in enumerate(out) if cur.get("name") == item["name"]), None)
        if item.get("$patch") == "delete":
            if pos is not None:
                del out[pos]
        elif pos is None:
            out.append(strategic_merge_patch({}, item))
        else:
            out[pos] = strategic_merge_patch(out[pos], item)
    return out


def _pointer(path: Any) -> list[str]:
    if not isinstance(path, str) or (path and not path.startswith("/")):
        raise _invalid(f'the JSON pointer "{path}" must be empty or start with "/"')
    if path == "":
        return []
    return [t.replace("~1", "/").replace("~0", "~") for t in path[1:].split("/")]


def _index(container: list, token: str, allow_end: bool) -> int:
    if allow_end and token == "-":
        return len(container)
    if not re.fullmatch(r"0|[1-9][0-9]*", token):
        raise _invalid(f'"{token}" is not an array index')
    idx = int(token)
    if idx > len(container) or (idx == len(container) and not allow_end):
        raise _invalid(f"array index {idx} is out of bounds")
    return idx


def _resolve(doc: Any, tokens: list[str]) -> Any:
    cur = doc
    for i, token in enumerate(tokens):
        if isinstance(cur, dict) and token in cur:
            cur = cur[token]
        elif isinstance(cur, list):
            cur = cur[_index(cur, token, False)]
        else:
            raise _invalid(f'path "/{"/".join(tokens[:i + 1])}" does not exist')
    return cur


def json_patch(doc: Any, ops: list) -> Any:
    """RFC 6902 JSON patch (add, remove, replace, move, copy, test) on a copy of `doc`."""
    doc = copy.deepcopy(doc)

    def add(doc, tokens, value):
        if not tokens:
            return value
        parent = _resolve(doc, tokens[:-1])
        if isinstance(parent, dict):
            parent[tokens[-1]] = value
        elif isinstance(parent, list):
            parent.insert(_index(parent, tokens[-1], True), value)
        else:
            raise _invalid(f"cannot add below a {type(parent).__name__}")
        return doc

    def remove(doc, tokens):
        if not tokens:
            raise _invalid("cannot remove the whole document")
        parent = _resolve(doc, tokens[:-1])
        if isinstance(parent, dict):
            if tokens[-1] not in parent:
                raise _invalid(f'cannot remove "{tokens[-1]}": it does not exist')
            return parent.pop(tokens[-1])
        if isinstance(parent, list):
            return parent.pop(_index(parent, tokens[-1], False))
        raise _invalid(f"cannot remove below a {type(parent).__name__}")

    for n, op in enumerate(ops):
        if not isinstance(op, dict) or not isinstance(op.get("op"), str):
            raise _invalid(f"JSON patch operation {n} is not an object with an `op`")
        kind = op["op"]
        tokens = _pointer(op.get("path"))
        if kind in ("add", "replace", "test") and "value" not in op:
            raise _invalid(f'JSON patch operation {n} ("{kind}") needs a value')
        if kind == "add":
            doc = add(doc, tokens, copy.deepcopy(op["value"]))
        elif kind == "remove":
            remove(doc, tokens)
        elif kind == "replace":
            if not tokens:
                doc = copy.deepcopy(op["value"])
            else:
                _resolve(doc, tokens)  # must exist
                parent = _resolve(doc, tokens[:-1])
                if isinstance(parent, list):
                    parent[_index(parent, tokens[-1], False)] = copy.deepcopy(op["value"])
                else:
                    parent[tokens[-1]] = copy.deepcopy(op["value"])
        elif kind in ("move", "copy"):
            source = _pointer(op.get("from"))
            if kind == "move":
                if tokens[:len(source)] == source and tokens != source:
                    raise _invalid(f'cannot move "{op.get("from")}" into its own child "{op.get("path")}"')
                value = remove(doc, source)
            else:
                value = copy.deepcopy(_resolve(doc, source))
            doc = add(doc, tokens, value)
        elif kind == "test":
            actual = _resolve(doc, tokens)
            if actual != op["value"] or type(actual) is not type(op["value"]):
                raise _invalid(f'testing value {op.get("path")} failed: expected {json.dumps(op["value"])}, '
                               f"found {json.dumps(actual)}")
        else:
            raise _invalid(f'JSON patch operation {n} has an unknown op "{kind}"')
    return doc


# ---- field ownership (simplified server-side apply) ------------------------------------------------------


def _item_token(item: dict) -> str:
    return "k:" + json.dumps({"name": item["name"]}, separators=(",", ":"))


def _walk(value: Any, path: tuple, out: dict) -> None:
    if isinstance(value, dict) and value:
        for k, v in value.items():
            _walk(v, path + ("f:" + k,), out)
    elif isinstance(value, list) and _named_list(value) and len({i["name"] for i in value}) == len(value):
        for item in value:
            _walk(item, path + (_item_token(item),), out)
    else:
        out[path] = value


def leaf_fields(obj: dict, rt: ResourceType) -> dict[tuple, Any]:
    """Every field a manager can own, as a FieldsV1 path -> value (see the module docstring)."""
    out: dict[tuple, Any] = {}
    for key, value in obj.items():
        if key in ("apiVersion", "kind") or (key == "status" and "status" in rt.subresources):
            continue
        if key == "metadata" and isinstance(value, dict):
            for mk, mv in value.items():
                if mk not in _IDENTITY_META:
                    _walk(mv, ("f:metadata", "f:" + mk), out)
        else:
            _walk(value, ("f:" + key,), out)
    return out


def _encode_fields(paths) -> dict:
    tree: dict = {}
    for path in sorted(paths):
        node = tree
        for token in path:
            node = node.setdefault(token, {})
            if token.startswith("k:"):
                node.setdefault(".", {})
    return tree


def _decode_fields(tree: Any, prefix: tuple = ()) -> set[tuple]:
    out: set[tuple] = set()
    if not isinstance(tree, dict):
        return out
    children = [k for k in tree if k != "."]
    if not children and prefix:
        out.add(prefix)
    for k in children:
        out |= _decode_fields(tree[k], prefix + (k,))
    return out


def _field_text(path: tuple) -> str:
    text = ""
    for token in path:
        if token.startswith("f:"):
            text += "." + token[2:]
        else:
            key = json.loads(token[2:])
            text += "[" + ",".join(f'{k}="{v}"' for k, v in key.items()) + "]"
    return text


def _managed(obj: dict) -> list[tuple[dict, set]]:
    entries = []
    for entry in (obj.get("metadata") or {}).get("managedFields") or []:
        if isinstance(entry, dict):
            entries.append((entry, _decode_fields(entry.get("fieldsV1"))))
    return entries


def _entries_json(entries: list[tuple[dict, set]], touched: dict[int, set], now: str) -> list[dict]:
    """managedFields from (entry, paths); entries in `touched` (by id) get new fieldsV1 and time."""
    out = []
    for entry, paths in entries:
        if not paths:
            continue
        if id(entry) in touched:
            entry = {**entry, "time": now, "fieldsType": "FieldsV1", "fieldsV1": _encode_fields(paths)}
        out.append(entry)
    return out


def track_update(current: dict | None, new: dict, rt: ResourceType, manager: str, now: str,
                 always: bool = False) -> None:
    """Record a non-apply write by `manager` in `new`'s managedFields: it owns what it changed.

    Only objects already under field management (someone applied them, or drift touched them) are
    tracked, unless `always`: imperatively created objects carry no managedFields, which keeps
    lists cheap for clients (the official Python client parses every entry's timestamp).
    """
    if not always and not (current and current["metadata"].get("managedFields")):
        new["metadata"].pop("managedFields", None)
        return
    old_fields = leaf_fields(current, rt) if current else {}
    new_fields = leaf_fields(new, rt)
    changed = {p for p, v in new_fields.items() if old_fields.get(p, _MISSING) != v}
    gone = old_fields.keys() - new_fields.keys()
    entries = _managed(current) if current else []
    if not changed and not gone:
        if entries:
            new["metadata"]["managedFields"] = current["metadata"]["managedFields"]
        else:
            new["metadata"].pop("managedFields", None)
        return
    touched: dict[int, set] = {}
    mine = None
    for entry, paths in entries:
        if entry.get("manager") == manager and entry.get("operation") == "Update" and not entry.get("subresource"):
            mine = (entry, paths)
        if paths & (changed | gone):
            paths -= changed | gone
            touched[id(entry)] = paths
    if mine is None:
        mine = ({"manager": manager, "operation": "Update", "apiVersion": rt.api_version}, set())
        entries.append(mine)
    mine[1].update(changed)
    touched[id(mine[0])] = mine[1]
    new["metadata"]["managedFields"] = _entries_json(entries, touched, now)


def _delete_path(obj: dict, path: tuple) -> None:
    """Remove one owned field, and the maps and list items its removal leaves empty.

    An associative list item's `name` goes last and only with the item: a remaining field keeps it.
    """
    trail = []  # (container, token, the value the token names in it)
    cur: Any = obj
    for token in path:
        if token.startswith("f:") and isinstance(cur, dict) and token[2:] in cur:
            child = cur[token[2:]]
        elif token.startswith("k:") and isinstance(cur, list):
            name = json.loads(token[2:]).get("name")
            child = next((i for i in cur if isinstance(i, dict) and i.get("name") == name), None)
            if child is None:
                return
        else:
            return
        trail.append((cur, token, child))
        cur = child
    if len(trail) > 1 and path[-1] == "f:name" and trail[-2][1].startswith("k:") and len(trail[-1][0]) > 1:
        return
    for depth in range(len(trail) - 1, -1, -1):
        parent, token, child = trail[depth]
        if token.startswith("f:"):
            parent.pop(token[2:], None)
        else:
            parent[:] = [i for i in parent if i is not child]
        if depth == 0 or parent or trail[depth - 1][1] == "f:metadata":
            break  # stop at the first container that still holds something, and never drop metadata


def _removal_order(path: tuple):
    """Deepest fields first; among siblings, an associative item's `name` after the rest."""
    return (-len(path), path[-1] == "f:name")


def server_side_apply(current: dict, applied: dict, rt: ResourceType, manager: str, force: bool, now: str) -> dict:
    """The object after `manager` applies `applied` to `current` (simplified SSA, see the docstring)."""
    applied_fields = leaf_fields(applied, rt)
    live_fields = leaf_fields(current, rt)
    entries = _managed(current)
    mine = None
    conflicts: list[tuple[str, tuple]] = []
    for entry, paths in entries:
        if entry.get("manager") == manager and entry.get("operation") == "Apply":
            mine = (entry, paths)
            continue
        for p in paths & applied_fields.keys():
            if live_fields.get(p, _MISSING) != applied_fields[p]:
                conflicts.append((entry.get("manager", ""), p))
    if conflicts and not force:
        count = len(conflicts)
        lines = "\n".join(f'- conflict with "{m}": {_field_text(p)}' for m, p in sorted(conflicts))
        raise KubeError(409, f"Apply failed with {count} conflict{'s' if count > 1 else ''}:\n{lines}", "Conflict",
                        {"name": current["metadata"]["name"], "kind": rt.plural,
                         "causes": [{"type": "FieldManagerConflict", "message": f'conflict with "{m}"',
                                     "field": _field_text(p)} for m, p in sorted(conflicts)]})
    touched: dict[int, set] = {}
    for entry, paths in entries:
        if mine is not None and entry is mine[0]:
            continue
        taken = {p for _, p in conflicts} & paths
        if taken:
            paths -= taken
            touched[id(entry)] = paths
    owned_by_others = set().union(*(paths for entry, paths in entries if mine is None or entry is not mine[0]))
    new = copy.deepcopy(current)
    if mine is not None:
        for p in sorted(mine[1] - applied_fields.keys() - owned_by_others, key=_removal_order):
            _delete_path(new, p)
    # The live status of a kind with a status subresource is not the applier's to change.
    ignored = ("apiVersion", "kind", "status") if "status" in rt.subresources else ("apiVersion", "kind")
    body = {k: v for k, v in applied.items() if k not in ignored}
    body["metadata"] = {k: v for k, v in (applied.get("metadata") or {}).items() if k not in _IDENTITY_META}
    new = strategic_merge_patch(new, body)
    if mine is None:
        mine = ({"manager": manager, "operation": "Apply", "apiVersion": rt.api_version}, set())
        entries.append(mine)
    values_changed = any(live_fields.get(p, _MISSING) != v for p, v in applied_fields.items())
    if mine[1] != applied_fields.keys() or touched or values_changed:
        mine[1].clear()
        mine[1].update(applied_fields.keys())
        touched[id(mine[0])] = mine[1]
    new["metadata"]["managedFields"] = _entries_json(entries, touched, now)
    if not new["metadata"]["managedFields"]:
        new["metadata"].pop("managedFields")
    return new


# ---- writes ----------------------------------------------------------------------------------------------


def _normalize(rt: ResourceType, obj: dict) -> None:
    """Conversions the API server makes on every write: a Secret's stringData lands in data."""
    if rt.kind == "Secret" and rt.group == "" and isinstance(obj.get("stringData"), dict):
        data = dict(obj.get("data") or {})
        for key, value in obj.pop("stringData").items():
            data[key] = base64.b64encode(str(value).encode()).decode()
        obj["data"] = data


def _prepare_new(store: KubeStore, rt: ResourceType, obj: dict) -> None:
    """What the real API server defaults or sets on create, for the kinds gpuplat relies on."""
    meta = obj["metadata"]
    for field in _SERVER_META - {"managedFields"}:
        meta.pop(field, None)
    if rt.kind == "Namespace":
        obj.setdefault("status", {}).setdefault("phase", "Active")
    elif rt.kind == "Pod":
        status = obj.setdefault("status", {})
        if not status.get("phase"):
            status["phase"] = "Pending"
    elif rt.kind == "CustomResourceDefinition" and rt.group == "apiextensions.k8s.io":
        _establish_crd(store, obj)


def _establish_crd(store: KubeStore, crd: dict) -> None:
    spec = crd.get("spec")
    names = (spec or {}).get("names") if isinstance(spec, dict) else None
    if not isinstance(names, dict) or not spec.get("group") or not names.get("plural") or not names.get("kind"):
        raise _invalid(f'CustomResourceDefinition.apiextensions.k8s.io "{crd["metadata"].get("name")}" is invalid: '
                       "spec.group, spec.names.plural and spec.names.kind are required")
    expected = f'{names["plural"]}.{spec["group"]}'
    if crd["metadata"].get("name") != expected:
        raise _invalid(f'CustomResourceDefinition.apiextensions.k8s.io "{crd["metadata"].get("name")}" is invalid: '
                       f'metadata.name: Invalid value: must be spec.names.plural+"."+spec.group ({expected})')
    versions = spec.get("versions")
    if not isinstance(versions, list) or not versions or not all(isinstance(v, dict) and v.get("name")
                                                                    for v in versions):
        raise _invalid(f'CustomResourceDefinition.apiextensions.k8s.io "{expected}" is invalid: '
                       "spec.versions: Required value: must have at least one version")
    names.setdefault("singular", names["kind"].lower())
    names.setdefault("listKind", names["kind"] + "List")
    now = store.sandbox.clock.rfc3339()
    storage = [v["name"] for v in versions if v.get("storage")] or [versions[0]["name"]]
    crd["status"] = {
        "acceptedNames": dict(names),
        "storedVersions": storage,
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "lastTransitionTime": now, "reason": "NoConflicts",
             "message": "no conflicts found"},
            {"type": "Established", "status": "True", "lastTransitionTime": now, "reason": "InitialNamesAccepted",
             "message": "the initial names have been accepted"},
        ],
    }


def _finish_update(store: KubeStore, rt: ResourceType, current: dict, new: dict, sent_rv: str | None,
                   dry: bool, manager: str | None, status_only: bool = False, always_track: bool = False) -> dict:
    """Store `new` over `current`: identity kept, status rules applied, ownership recorded."""
    if not isinstance(new, dict):
        raise _invalid("the patched object is not an object")
    meta = new.get("metadata")
    new["metadata"] = meta = dict(meta) if isinstance(meta, dict) else {}
    cur_meta = current["metadata"]
    if meta.get("name") not in (None, cur_meta["name"]):
        raise _bad_request(f"the name of the object ({meta.get('name')}) does not match the name on the URL "
                           f"({cur_meta['name']})")
    if rt.namespaced and meta.get("namespace") not in (None, cur_meta.get("namespace")):
        raise _bad_request("the namespace of the provided object does not match the namespace sent on the request")
    for field in ("name", "namespace", "uid", "creationTimestamp", "generation"):
        if field in cur_meta:
            meta[field] = cur_meta[field]
    for field in ("labels", "annotations"):  # empty maps are omitted when the object is serialised
        if field in meta and not meta[field]:
            del meta[field]
    meta["resourceVersion"] = sent_rv or cur_meta["resourceVersion"]
    if status_only:
        new = {**current, "status": new.get("status"), "metadata": {**cur_meta,
                                                                     "resourceVersion": meta["resourceVersion"]}}
        if new["status"] is None:
            new.pop("status")
    elif "status" in rt.subresources:
        if "status" in current:
            new["status"] = current["status"]
        else:
            new.pop("status", None)
    if not status_only:
        _normalize(rt, new)
    if manager is not None and not status_only:
        track_update(current, new, rt, manager, store.sandbox.clock.rfc3339(), always=always_track)
    elif "managedFields" in cur_meta and not status_only:
        meta["managedFields"] = cur_meta["managedFields"]
    return store.replace(rt, new, check_rv=True, dry_run=dry)


def _delete_cascade(store: KubeStore, rt: ResourceType, obj: dict) -> None:
    """What the namespace and CRD controllers would do next, done at once."""
    objects = store.data["objects"]
    if rt.kind == "Namespace" and rt.group == "":
        name = obj["metadata"]["name"]
        for key in [k for k, o in objects.items() if o.get("metadata", {}).get("namespace") == name]:
            del objects[key]
        for key in [k for k in store.data["logs"] if k.startswith(name + "/")]:
            del store.data["logs"][key]
    elif rt.kind == "CustomResourceDefinition" and rt.group == "apiextensions.k8s.io":
        spec = obj.get("spec") or {}
        prefix = f'{spec.get("group", "")}/{(spec.get("names") or {}).get("plural", "")}/'
        for key in [k for k in objects if k.startswith(prefix)]:
            del objects[key]
    elif rt.kind == "Pod" and rt.group == "":
        store.data["logs"].pop(f'{obj["metadata"].get("namespace")}/{obj["metadata"]["name"]}', None)
    store.sandbox.store.mark()


# ---- handlers: meta endpoints and discovery --------------------------------------------------------------


def version(sb: "Sandbox", req: Request):
    store = _store(sb, req)
    git_version = store.data["meta"].get("gitVersion") or DEFAULT_GIT_VERSION
    m = re.match(r"v(\d+)\.(\d+)", git_version)
    major, minor = (m.group(1), m.group(2)) if m else ("1", "33")
    return _json({
        "major": major, "minor": minor, "emulationMajor": major, "emulationMinor": minor,
        "minCompatibilityMajor": major, "minCompatibilityMinor": str(max(int(minor) - 1, 0)),
        "gitVersion": git_version, "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean", "buildDate": "2025-09-09T00:00:00Z", "goVersion": "go1.24.6",
        "compiler": "gc", "platform": "linux/amd64",
    })


def health(sb: "Sandbox", req: Request):
    _store(sb, req)
    return Response(200, "ok", "text/plain; charset=utf-8")


def root_paths(sb: "Sandbox", req: Request):
    store = _store(sb, req)
    paths = ["/api", "/api/v1", "/apis", "/healthz", "/livez", "/openapi/v3", "/readyz", "/version"]
    for group, versions in _groups(store.types()).items():
        paths.append(f"/apis/{group}")
        paths.extend(f"/apis/{group}/{v}" for v in versions)
    return _json({"paths": sorted(paths)})


def _version_priority(version: str):
    """Kubernetes version priority: GA before beta before alpha, higher numbers first."""
    m = re.fullmatch(r"v(\d+)(?:(alpha|beta)(\d+))?", version)
    if m is None:
        return (3, 0, 0, version)
    return ({None: 0, "beta": 1, "alpha": 2}[m.group(2)], -int(m.group(1)), -int(m.group(3) or 0), version)


def _groups(types: list[ResourceType]) -> dict[str, list[str]]:
    """group -> versions (preferred first), in the order types are declared."""
    groups: dict[str, list[str]] = {}
    for rt in types:
        if rt.group:
            versions = groups.setdefault(rt.group, [])
            if rt.version not in versions:
                versions.append(rt.version)
    return {g: sorted(vs, key=_version_priority) for g, vs in groups.items()}


def _api_group(group: str, versions: list[str]) -> dict:
    listed = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
    return {"name": group, "versions": listed, "preferredVersion": listed[0]}


def _resource_list(types: list[ResourceType], group: str, version: str) -> dict:
    resources = []
    for rt in types:
        if rt.group != group or rt.version != version:
            continue
        entry = {"name": rt.plural, "singularName": rt.singular, "namespaced": rt.namespaced, "kind": rt.kind,
                 "verbs": VERBS}
        if rt.short_names:
            entry["shortNames"] = list(rt.short_names)
        resources.append(entry)
        for sub in rt.subresources:
            sub_entry = {"name": f"{rt.plural}/{sub}", "singularName": "", "namespaced": rt.namespaced,
                         "kind": rt.kind, "verbs": SUBRESOURCE_VERBS.get(sub, ["get"])}
            if sub == "scale":
                sub_entry.update(group="autoscaling", version="v1", kind="Scale")
            resources.append(sub_entry)
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": f"{group}/{version}" if group else version,
            "resources": resources}


def api_versions(sb: "Sandbox", req: Request):
    _store(sb, req)
    host = req.headers.get("Host") or "127.0.0.1"
    return _json({"kind": "APIVersions", "versions": ["v1"],
                  "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": host}]})


def core_resources(sb: "Sandbox", req: Request):
    store = _store(sb, req)
    return _json(_resource_list(store.types(), "", "v1"))


def api_groups(sb: "Sandbox", req: Request):
    store = _store(sb, req)
    groups = [_api_group(g, vs) for g, vs in _groups(store.types()).items()]
    return _json({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})


def api_group(sb: "Sandbox", req: Request):
    store = _store(sb, req)
    group = req.match["group"]
    versions = _groups(store.types()).get(group)
    if not versions:
        raise ApiError(404, "the server could not find the requested resource", reason="NotFound")
    return _json({"kind": "APIGroup", "apiVersion": "v1", **_api_group(group, versions)})


def group_resources(sb: "Sandbox", req: Request):
    store = _store(sb, req)
    group, version = req.match["group"], req.match["version"]
    types = store.types()
    if not any(rt.group == group and rt.version == version for rt in types):
        raise ApiError(404, "the server could not find the requested resource", reason="NotFound")
    return _json(_resource_list(types, group, version))


def _gv_path(group: str, version: str) -> str:
    return f"apis/{group}/{version}" if group else f"api/{version}"


def openapi_root(sb: "Sandbox", req: Request):
    """OpenAPI v3 discovery: one document per group-version (kubectl's validation reads them)."""
    store = _store(sb, req)
    types = store.types()
    gvs = sorted({(rt.group, rt.version) for rt in types})
    paths = {}
    for group, version in gvs:
        digest = hashlib.sha256(json.dumps(_resource_list(types, group, version), sort_keys=True).encode())
        paths[_gv_path(group, version)] = {
            "serverRelativeURL": f"/openapi/v3/{_gv_path(group, version)}?hash={digest.hexdigest()[:32].upper()}"}
    return _json({"paths": paths})


def openapi_group_version(sb: "Sandbox", req: Request):
    """A skeleton OpenAPI v3 document: the operations and parameters of each resource, no schemas.

    It is what `kubectl apply`/`create` need to see that the server validates fields itself
    (`fieldValidation` on PATCH); kubectl then skips its client-side schema validation.
    """
    store = _store(sb, req)
    m = re.fullmatch(r"api/(v1)|apis/([^/]+)/([^/]+)", req.match["gvpath"])
    if m is None:
        raise ApiError(404, "the server could not find the requested resource", reason="NotFound")
    group, version = (m.group(2), m.group(3)) if m.group(2) else ("", m.group(1))
    types = [rt for rt in store.types() if rt.group == group and rt.version == version]
    if not types:
        raise ApiError(404, "the server could not find the requested resource", reason="NotFound")
    query = [{"name": n, "in": "query", "schema": {"type": "string"}, "uniqueItems": True}
             for n in ("dryRun", "fieldManager", "fieldValidation", "force", "pretty")]
    paths = {}
    for rt in types:
        gvk = {"group": group, "version": version, "kind": rt.kind}
        base = "/" + _gv_path(group, version) + ("/namespaces/{namespace}" if rt.namespaced else "")

        def op(action: str, verb: str) -> dict:
            return {"operationId": f"{verb}{rt.kind}", "parameters": query, "responses": {"200": {"description": "OK"}},
                    "x-kubernetes-action": action, "x-kubernetes-group-version-kind": gvk}

        paths[f"{base}/{rt.plural}"] = {"get": op("list", "list"), "post": op("post", "create"),
                                        "delete": op("deletecollection", "deleteCollection")}
        paths[f"{base}/{rt.plural}/{{name}}"] = {"get": op("get", "read"), "put": op("put", "replace"),
                                                 "patch": op("patch", "patch"), "delete": op("delete", "delete")}
    return _json({"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": DEFAULT_GIT_VERSION},
                  "paths": paths, "components": {"schemas": {}}})


# ---- handlers: objects -----------------------------------------------------------------------------------


def list_objects(sb: "Sandbox", req: Request):
    store, rt, namespace = _resource(sb, req, item=False)
    items = _select(store, rt, namespace, req)
    if _truthy(req.param("watch")):
        since = req.param("resourceVersion") or "0"
        floor = int(since) if since.isdigit() else 0
        events = [json.dumps({"type": "ADDED", "object": o}, separators=(",", ":"))
                  for o in items if int(o["metadata"].get("resourceVersion") or 0) > floor]
        return Response(200, "".join(e + "\n" for e in events).encode(), "application/json")
    return _json({"kind": rt.kind + "List", "apiVersion": rt.api_version,
                  "metadata": {"resourceVersion": str(store.data["rv"])}, "items": items})


def get_object(sb: "Sandbox", req: Request):
    store, rt, namespace = _resource(sb, req, item=True)
    name = req.match["name"]
    obj = store.get_object(rt.group, rt.plural, namespace, name)
    if obj is None:
        raise _not_found(rt, name)
    return _json(obj)


def create_object(sb: "Sandbox", req: Request):
    store, rt, namespace = _resource(sb, req, item=False)
    if rt.namespaced and namespace is None:
        raise ApiError(405, f"{rt.kind} objects are created in a namespace: POST to "
                            f".../namespaces/<namespace>/{rt.plural}", reason="MethodNotAllowed")
    dry = _dry_run(req)
    body = _body_object(req)
    _check_kind(rt, body)
    _check_identity(rt, body, None, namespace)
    if body["metadata"].get("resourceVersion"):
        raise _bad_request("resourceVersion should not be set on objects to be created")
    if rt.namespaced:
        _require_namespace(store, namespace)
    _prepare_new(store, rt, body)
    _normalize(rt, body)
    body["metadata"].pop("managedFields", None)
    track_update(None, body, rt, _manager(req), sb.clock.rfc3339())
    obj = store.create(rt, body, namespace, dry_run=dry)
    return _json(obj, 201)


def replace_object(sb: "Sandbox", req: Request):
    store, rt, namespace = _resource(sb, req, item=True)
    name = req.match["name"]
    dry = _dry_run(req)
    body = _body_object(req)
    _check_kind(rt, body)
    _check_identity(rt, body, name, namespace)
    current = store.get_object(rt.group, rt.plural, namespace, name)
    if current is None:
        raise _not_found(rt, name)
    body["metadata"].pop("managedFields", None)
    obj = _finish_update(store, rt, current, body, body["metadata"].get("resourceVersion"), dry, _manager(req))
    return _json(obj)


def _patched(req: Request, rt: ResourceType, current: dict) -> dict:
    ctype = req.content_type
    if ctype not in (JSON_PATCH, MERGE_PATCH, STRATEGIC_PATCH):
        raise ApiError(415, f'the body of the request was in an unknown format - accepted media types include: '
                            f'{JSON_PATCH}, {MERGE_PATCH}, {STRATEGIC_PATCH}, {APPLY_PATCH} (got "{ctype}")',
                       reason="UnsupportedMediaType")
    doc = _parse_body(req)
    if ctype == JSON_PATCH:
        if not isinstance(doc, list):
            raise _bad_request("a JSON patch (application/json-patch+json) must be a list of operations")
        return json_patch(current, doc)
    if not isinstance(doc, dict):
        raise _bad_request(f"a {ctype} body must be an object")
    if ctype == MERGE_PATCH:
        return merge_patch(current, doc)
    return strategic_merge_patch(current, doc)


def patch_object(sb: "Sandbox", req: Request):
    store, rt, namespace = _resource(sb, req, item=True)
    name = req.match["name"]
    dry = _dry_run(req)
    current = store.get_object(rt.group, rt.plural, namespace, name)
    if req.content_type == APPLY_PATCH:
        return _apply(sb, req, store, rt, namespace, name, current, dry)
    if current is None:
        if req.content_type not in (JSON_PATCH, MERGE_PATCH, STRATEGIC_PATCH):
            _patched(req, rt, {})  # 415 before 404, as the real server decides on the type first
        raise _not_found(rt, name)
    new = _patched(req, rt, current)
    sent_rv = (new.get("metadata") or {}).get("resourceVersion") if isinstance(new, dict) else None
    if sent_rv == current["metadata"]["resourceVersion"]:
        sent_rv = None
    return _json(_finish_update(store, rt, current, new, sent_rv, dry, _manager(req)))


def _apply(sb: "Sandbox", req: Request, store: KubeStore, rt: ResourceType, namespace: str | None, name: str,
           current: dict | None, dry: bool, status_only: bool = False):
    manager = req.param("fieldManager")
    if not manager:
        raise _bad_request("PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: "
                           "is required for apply patch")
    applied = _parse_body(req, allow_yaml=True)
    if not isinstance(applied, dict):
        raise _bad_request("an applied configuration must be an object")
    if not isinstance(applied.setdefault("metadata", {}), dict):
        raise _bad_request("metadata must be an object")
    _check_kind(rt, applied, required=True)
    _check_identity(rt, applied, name, namespace)
    if applied["metadata"].get("managedFields"):
        raise _bad_request("metadata.managedFields must be nil in an applied configuration")
    now = sb.clock.rfc3339()
    if current is None:
        if status_only:
            raise _not_found(rt, name)
        if rt.namespaced:
            _require_namespace(store, namespace)
        obj = {k: v for k, v in applied.items()}
        obj["metadata"] = dict(applied["metadata"], name=name)
        _prepare_new(store, rt, obj)
        _normalize(rt, obj)
        fields = leaf_fields(obj, rt)
        if fields:
            obj["metadata"]["managedFields"] = [{"manager": manager, "operation": "Apply",
                                                 "apiVersion": rt.api_version, "time": now,
                                                 "fieldsType": "FieldsV1", "fieldsV1": _encode_fields(fields)}]
        return _json(store.create(rt, obj, namespace, dry_run=dry), 201)
    sent_rv = applied["metadata"].get("resourceVersion")
    if status_only:
        new = strategic_merge_patch(current, {"status": applied.get("status")})
        return _json(_finish_update(store, rt, current, new, sent_rv, dry, None, status_only=True))
    new = server_side_apply(current, applied, rt, manager, _truthy(req.param("force")), now)
    _normalize(rt, new)
    new["metadata"]["resourceVersion"] = sent_rv or current["metadata"]["resourceVersion"]
    return _json(store.replace(rt, new, check_rv=True, dry_run=dry))


def delete_object(sb: "Sandbox", req: Request):
    store, rt, namespace = _resource(sb, req, item=True)
    name = req.match["name"]
    dry = _dry_run(req)
    current = store.get_object(rt.group, rt.plural, namespace, name)
    if current is None:
        raise _not_found(rt, name)
    if rt.kind == "Namespace" and rt.group == "" and name in PROTECTED_NAMESPACES:
        raise ApiError(403, f'namespaces "{name}" is forbidden: this namespace may not be deleted', reason="Forbidden")
    options = _parse_body(req) if req.body else {}
    pre = options.get("preconditions") if isinstance(options, dict) else None
    if isinstance(pre, dict):
        meta = current["metadata"]
        if pre.get("uid") and pre["uid"] != meta.get("uid") or (
                pre.get("resourceVersion") and pre["resourceVersion"] != meta.get("resourceVersion")):
            raise ApiError(409, f'Operation cannot be fulfilled on {_gr(rt)} "{name}": the precondition '
                                f"(uid or resourceVersion) does not match the object", reason="Conflict")
    if not dry:
        store.delete(rt, namespace, name)
        _delete_cascade(store, rt, current)
    return _json(_status_success(rt, current))


def delete_collection(sb: "Sandbox", req: Request):
    store, rt, namespace = _resource(sb, req, item=False)
    dry = _dry_run(req)
    doomed = _select(store, rt, namespace, req)
    if not dry:
        for obj in doomed:
            store.delete(rt, obj["metadata"].get("namespace"), obj["metadata"]["name"])
            _delete_cascade(store, rt, obj)
    return _json({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                  "details": {"kind": rt.plural, **({"group": rt.group} if rt.group else {})}})


def _subresource(sb: "Sandbox", req: Request):
    store, rt, namespace = _resource(sb, req, item=True)
    sub, name = req.match["sub"], req.match["name"]
    if sub not in rt.subresources:
        raise ApiError(404, "the server could not find the requested resource", reason="NotFound")
    if sub not in ("status", "log"):
        raise ApiError(404, f"the sandbox does not serve the {rt.plural}/{sub} subresource", reason="NotFound")
    return store, rt, namespace, sub, name, store.get_object(rt.group, rt.plural, namespace, name)


def get_subresource(sb: "Sandbox", req: Request):
    store, rt, namespace, sub, name, current = _subresource(sb, req)
    if current is None:
        raise _not_found(rt, name)
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
    return _json(current)


def update_subresource(sb: "Sandbox", req: Request):
    store, rt, namespace, sub, name, current = _subresource(sb, req)
    if sub != "status":
        raise ApiError(405, f"{rt.plural}/{sub} is read-only", reason="MethodNotAllowed")
    if current is None:
        raise _not_found(rt, name)
    dry = _dry_run(req)
    body = _body_object(req)
    _check_kind(rt, body)
    _check_identity(rt, body, name, namespace)
    return _json(_finish_update(store, rt, current, body, body["metadata"].get("resourceVersion"), dry, None,
                                status_only=True))


def patch_subresource(sb: "Sandbox", req: Request):
    store, rt, namespace, sub, name, current = _subresource(sb, req)
    if sub != "status":
        raise ApiError(405, f"{rt.plural}/{sub} is read-only", reason="MethodNotAllowed")
    dry = _dry_run(req)
    if req.content_type == APPLY_PATCH:
        return _apply(sb, req, store, rt, namespace, name, current, dry, status_only=True)
    if current is None:
        raise _not_found(rt, name)
    new = _patched(req, rt, current)
    sent_rv = (new.get("metadata") or {}).get("resourceVersion") if isinstance(new, dict) else None
    if sent_rv == current["metadata"]["resourceVersion"]:
        sent_rv = None
    return _json(_finish_update(store, rt, current, new, sent_rv, dry, None, status_only=True))


# ---- admin: drift injection ------------------------------------------------------------------------------

DRIFT_MANAGER = "sandbox-drift"


def drift(sb: "Sandbox", req: Request):
    """Change an object behind gpuplat's back, as a person with kubectl would (not a counted call).

    Body: `{apiVersion, kind, namespace?, name, action: delete | annotate | label | merge, key?, value?,
    patch?}`; for annotate/label a null value removes the key; merge applies an RFC 7386 patch. The
    write is recorded as an `Update` by the field manager `sandbox-drift`, so a later server-side apply
    of a field it changed conflicts unless forced, as after a real `kubectl edit`.
    """
    cid = req.match["cluster"]
    if cid not in sb.kube_cluster_ids():
        raise ApiError(404, f'sandbox cluster "{cid}" not found', reason="NotFound")
    body = req.json()
    if not isinstance(body, dict):
        raise _bad_request("drift needs a JSON object")
    missing = [k for k in ("apiVersion", "kind", "name", "action") if not body.get(k)]
    if missing:
        raise _bad_request(f"drift needs {', '.join(missing)}")
    store = sb.kube(cid)
    rt = store.type_for(body["apiVersion"], body["kind"])
    namespace = (body.get("namespace") or "default") if rt.namespaced else None
    name = body["name"]
    current = store.get_object(rt.group, rt.plural, namespace, name)
    if current is None:
        raise _not_found(rt, name)
    action = body["action"]
    if action == "delete":
        store.delete(rt, namespace, name)
        _delete_cascade(store, rt, current)
        return {"deleted": True, "name": name, "namespace": namespace}
    if action in ("annotate", "label"):
        if not body.get("key"):
            raise _bad_request(f"drift {action} needs a key")
        field = "annotations" if action == "annotate" else "labels"
        value = body.get("value")
        patch = {"metadata": {field: {body["key"]: None if value is None else str(value)}}}
    elif action == "merge":
        patch = body.get("patch")
        if not isinstance(patch, dict):
            raise _bad_request("drift merge needs a `patch` object")
    else:
        raise _bad_request(f"drift action {action!r} is not one of delete, annotate, label, merge")
    new = merge_patch(current, patch)
    status = new.get("status")
    obj = _finish_update(store, rt, current, new, None, False, DRIFT_MANAGER, always_track=True)
    if "status" in patch and status != obj.get("status"):  # drift may touch what controllers own, too
        changed = {k: v for k, v in obj.items() if k != "status"}
        if status is not None:
            changed["status"] = status
        obj = store.replace(rt, changed, check_rv=False)
    return obj


# ---- routes ----------------------------------------------------------------------------------------------


def _build_routes() -> list[Route]:
    routes = [
        Route("GET", r"/", root_paths, "get:discovery"),
        Route("GET", r"/version", version, "get:version"),
        Route("GET", r"/(?:healthz|livez|readyz)(?:/[^/]+)?", health, "get:health"),
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

ADMIN_ROUTES = [
    Route("POST", r"/sandbox/kube/(?P<cluster>[^/]+)/drift", drift, "kube.drift"),
]
