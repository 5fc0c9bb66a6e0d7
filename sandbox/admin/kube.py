"""Admin verbs on the sandbox's Kubernetes clusters: change an object behind gpuplat's back."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..apis.kube_patch import merge_patch
from ..apis.kube_writes import delete_cascade, finish_update
from ..core import ApiError
from ..wire.http import Request, Route
from ..wire.kube import bad_request, not_found

if TYPE_CHECKING:
    from ..core import SandboxContext as Sandbox


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
        raise bad_request("drift needs a JSON object")
    missing = [k for k in ("apiVersion", "kind", "name", "action") if not body.get(k)]
    if missing:
        raise bad_request(f"drift needs {', '.join(missing)}")
    store = sb.kube(cid)
    rt = store.type_for(body["apiVersion"], body["kind"])
    namespace = (body.get("namespace") or "default") if rt.namespaced else None
    name = body["name"]
    current = store.get_object(rt.group, rt.plural, namespace, name)
    if current is None:
        raise not_found(rt, name)
    action = body["action"]
    if action == "delete":
        store.delete(rt, namespace, name)
        delete_cascade(store, rt, current)
        return {"deleted": True, "name": name, "namespace": namespace}
    if action in ("annotate", "label"):
        if not body.get("key"):
            raise bad_request(f"drift {action} needs a key")
        field = "annotations" if action == "annotate" else "labels"
        value = body.get("value")
        patch = {"metadata": {field: {body["key"]: None if value is None else str(value)}}}
    elif action == "merge":
        patch = body.get("patch")
        if not isinstance(patch, dict):
            raise bad_request("drift merge needs a `patch` object")
    else:
        raise bad_request(f"drift action {action!r} is not one of delete, annotate, label, merge")
    new = merge_patch(current, patch)
    status = new.get("status")
    obj = finish_update(store, rt, current, new, None, False, DRIFT_MANAGER, always_track=True)
    if "status" in patch and status != obj.get("status"):  # drift may touch what controllers own, too
        changed = {k: v for k, v in obj.items() if k != "status"}
        if status is not None:
            changed["status"] = status
        obj = store.replace(rt, changed, check_rv=False)
    return obj

ADMIN_ROUTES = [
    Route("POST", r"/sandbox/kube/(?P<cluster>[^/]+)/drift", drift, "kube.drift"),
]
