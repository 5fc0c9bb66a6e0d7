"""Google's REST conventions, shared by every Google API the sandbox serves.

Request bodies are parsed, and answers rendered, through the client libraries' own message types,
the way Google's front end does: enums as names for plain JSON clients (gcloud) and as integers for
`$alt=json;enum-encoding=int` (the Python REST clients), zero values omitted, int64 as strings.
Errors are `{"error": {code, message, status}}`; list calls page with `pageSize`/`pageToken`.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict

from ..core import ApiError
from .http import Request, Response


def parse_google_body(req: Request, msg_type) -> dict:
    """Parse a request body the way Google's front end does, into the canonical JSON form."""
    from google.protobuf import json_format

    pb = msg_type.pb()()
    if req.body:
        try:
            json_format.Parse(req.body, pb)
        except (json_format.ParseError, UnicodeDecodeError, ValueError) as exc:
            raise ApiError(400, f"Invalid JSON payload received. {exc}") from None
    return json_format.MessageToDict(pb)

# Rendering a message through protobuf's pure-Python JSON costs about 0.5 ms; the same stored JSON
# is asked for again and again (polls, drift ticks), so recent answers are kept, the least recently
# asked dropped first. Enough for every cluster of a 1,000-cluster fleet and its other answers: a cache
# smaller than what one tick asks was emptied every tick, and every GetCluster rendered anew.
_EMIT_CACHE: "OrderedDict[tuple[str, bool, bytes], str]" = OrderedDict()
_EMIT_CACHE_MAX = 4096
_EMIT_LOCK = threading.Lock()


def field_mask(req: Request, msg_type) -> dict | None:
    """The response filter a request asked for with the `X-Goog-FieldMask` header (or the `$fields` /
    `fields` parameter), as a tree of JSON field names (None under a name: all of it); None when it asked
    for none. Every Google API trims its answer to it (https://cloud.google.com/apis/docs/system-parameters;
    google-cloud-cpp's FieldMaskOption: "useful in large responses, such as listing resources"). A path
    runs through repeated fields (`clusters.nodePools.name`, as the Places API's `places.displayName`); a
    field the message does not have is INVALID_ARGUMENT. Simulation: the parenthesised sub-selection
    form (`nodePools(name,status)`) is not parsed here; the sandbox refuses it by name."""
    raw = req.headers.get("X-Goog-FieldMask") or req.param("$fields") or req.param("fields")
    if not raw or raw.strip() == "*":
        return None
    if "(" in raw or ")" in raw:
        raise ApiError(400, f"Invalid field mask {raw!r}: the sandbox serves dotted paths only (a.b,c), not "
                            f"sub-selections in parentheses.")
    tree: dict = {}
    for path in (p.strip() for p in raw.split(",")):
        node, desc, parts = tree, msg_type.pb().DESCRIPTOR, path.replace("/", ".").split(".")
        for i, part in enumerate(parts):
            field = (desc.fields_by_camelcase_name.get(part) or desc.fields_by_name.get(part)) if desc else None
            if field is None:
                raise ApiError(400, f"Invalid field mask path {path!r}: {desc.full_name if desc else 'a scalar'} "
                                    f"has no field {part!r}.")
            if i == len(parts) - 1:
                node[field.json_name] = None  # all of it, whatever narrower paths asked
            elif node.get(field.json_name, {}) is None:
                break  # a shorter path asked for all of it
            else:
                node, desc = node.setdefault(field.json_name, {}), field.message_type
    return tree


def _trimmed(value, tree: dict | None):
    if tree is None:
        return value
    if isinstance(value, list):
        return [_trimmed(v, tree) for v in value]
    if not isinstance(value, dict):
        return value
    return {k: _trimmed(value[k], sub) for k, sub in tree.items() if k in value}


def emit_google(req: Request, msg_type, data: dict) -> Response:
    """Answer with `data` as the message type, as Google does: enums as names or integers (whichever
    the client asked for), zero values omitted, trimmed to the request's field mask."""
    from google.protobuf import json_format

    mask = field_mask(req, msg_type)
    if mask is not None:
        data = _trimmed(data, mask)
    # The stored JSON's digest names it: the key stays small however large the message is.
    key = (msg_type.__name__, req.int_enums,
           hashlib.blake2b(json.dumps(data, separators=(",", ":")).encode(), digest_size=16).digest())
    with _EMIT_LOCK:
        text = _EMIT_CACHE.get(key)
        if text is not None:
            _EMIT_CACHE.move_to_end(key)
    if text is None:
        pb = msg_type.pb()()
        json_format.ParseDict(data, pb, ignore_unknown_fields=True)
        text = json_format.MessageToJson(pb, use_integers_for_enums=req.int_enums, indent=None)
        with _EMIT_LOCK:
            _EMIT_CACHE[key] = text
            while len(_EMIT_CACHE) > _EMIT_CACHE_MAX:
                _EMIT_CACHE.popitem(last=False)
    return Response(200, text)


def google_page(req: Request, items: list, default: int, maximum: int) -> tuple[list, str]:
    """One page of a Google list call (`pageSize`, opaque `pageToken`) and the next page's token."""
    import base64

    try:
        size = int(req.param("pageSize") or 0) or default
        token = req.param("pageToken")
        start = int(base64.urlsafe_b64decode(token + "==").decode() or 0) if token else 0
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "Invalid page_size or page_token.") from None
    if size < 0 or size > maximum:
        raise ApiError(400, f"page_size must be between 0 and {maximum}.")
    end = start + size
    next_token = base64.urlsafe_b64encode(str(end).encode()).decode().rstrip("=") if end < len(items) else ""
    return items[start:end], next_token


def google_error(err: ApiError) -> Response:
    body = {"code": err.code, "message": err.message, "status": err.status}
    if err.details:
        body["details"] = err.details
    return Response(err.code, {"error": body})


def service_disabled_error(project: str, service: str, title: str) -> ApiError:
    """Google's 403 for a call to an API the project has not enabled (ErrorInfo SERVICE_DISABLED), as
    the front end answers it for every API (google-gemini/gemini-cli#1343 shows the body)."""
    url = f"https://console.developers.google.com/apis/api/{service}/overview?project={project}"
    message = (f"{title} has not been used in project {project} before or it is disabled. Enable it by visiting "
               f"{url} then retry. If you enabled this API recently, wait a few minutes for the action to "
               f"propagate to our systems and retry.")
    return ApiError(403, message, status="PERMISSION_DENIED", details=[
        {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "SERVICE_DISABLED",
         "domain": "googleapis.com",
         "metadata": {"service": service, "consumer": f"projects/{project}", "activationUrl": url,
                      "serviceTitle": title, "containerInfo": project}},
        {"@type": "type.googleapis.com/google.rpc.LocalizedMessage", "locale": "en-US", "message": message},
        {"@type": "type.googleapis.com/google.rpc.Help",
         "links": [{"description": "Google developers console API activation", "url": url}]},
    ])


def service_disabled(project: str, service: str, title: str) -> Response:
    return google_error(service_disabled_error(project, service, title))
