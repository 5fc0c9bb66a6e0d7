"""What the Kubernetes API server does around every read and write: resolving the URL to a cluster's store
and resource type, checking the body's identity, server defaults, CRDs becoming established, the
status subresource rule, and the namespace/CRD cascades on delete.

Simplifications, so nobody mistakes them for the real thing: deletion is immediate (no finalizers,
no graceful termination, no garbage collection by owner references; deleting a Namespace deletes its
objects, deleting a CRD deletes its objects); no admission and no defaulting beyond a Namespace's
`Active` phase, a Pod's `Pending` phase, a Secret's `Opaque` type, a CRD's `Established` condition and a Secret's `stringData`
folded into `data`; no schema validation. Writes to a resource with a `status` subresource keep the
live `status`; only `.../{name}/status` changes it.
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING

from ..core import ApiError
from ..stores.kube import KubeStore
from ..wire.http import Request, fault_error
from ..wire.kube import KubeError, ResourceType, bad_request, invalid
from .kube_fields import SERVER_META, track_update

if TYPE_CHECKING:
    from ..core import SandboxContext as Sandbox


def cluster_store(sb: "Sandbox", req: Request) -> KubeStore:
    cid = req.match["cluster"]
    if cid not in sb.kube_cluster_ids():
        raise ApiError(404, f'sandbox cluster "{cid}" not found', reason="NotFound")
    if req.fault is not None:  # quota / stockout faults have no meaning here: fail before acting
        raise fault_error(req.fault, f"{req.method} {req.path}")
    return sb.kube(cid)


def resource_of(sb: "Sandbox", req: Request, item: bool) -> tuple[KubeStore, ResourceType, str | None]:
    """The store, the resource type and the namespace the URL names (404 for unknown ones)."""
    store = cluster_store(sb, req)
    m = req.match
    rt = store.resolve_type(m.get("group", ""), m["version"], m["plural"])
    namespace = m.get("namespace")
    if namespace is not None and not rt.namespaced:
        raise ApiError(404, "the server could not find the requested resource", reason="NotFound")
    if namespace is None and rt.namespaced and item:
        raise ApiError(404, "the server could not find the requested resource", reason="NotFound")
    return store, rt, namespace


def check_kind(rt: ResourceType, body: dict, required: bool = False) -> None:
    kind, api_version = body.get("kind"), body.get("apiVersion")
    if required and (not kind or not api_version):
        raise bad_request("apiVersion and kind must be set in an applied object")
    if kind and kind != rt.kind:
        raise bad_request(f'the kind in the body ({kind}) does not match the resource ({rt.kind}) of the URL')
    if api_version and api_version != rt.api_version:
        raise bad_request(f"the API version in the data ({api_version}) does not match the expected API version "
                           f"({rt.api_version})")


def check_identity(rt: ResourceType, obj: dict, name: str | None, namespace: str | None) -> None:
    meta = obj.get("metadata") or {}
    if name is not None and meta.get("name") not in (None, "", name):
        raise bad_request(f"the name of the object ({meta.get('name')}) does not match the name on the URL ({name})")
    if rt.namespaced and namespace is not None and meta.get("namespace") not in (None, "", namespace):
        raise bad_request("the namespace of the provided object does not match the namespace sent on the request")


def require_namespace(store: KubeStore, namespace: str) -> None:
    if store.get_object("", "namespaces", None, namespace) is None:
        raise KubeError(404, f'namespaces "{namespace}" not found', "NotFound",
                        {"name": namespace, "kind": "namespaces"})


def normalize(rt: ResourceType, obj: dict) -> None:
    """Conversions the API server makes on every write: a Secret's stringData lands in data."""
    if rt.kind == "Secret" and rt.group == "" and isinstance(obj.get("stringData"), dict):
        data = dict(obj.get("data") or {})
        for key, value in obj.pop("stringData").items():
            data[key] = base64.b64encode(str(value).encode()).decode()
        obj["data"] = data


def prepare_new(store: KubeStore, rt: ResourceType, obj: dict) -> None:
    """What the real API server defaults or sets on create, for the kinds gpuplat relies on."""
    meta = obj["metadata"]
    for field in SERVER_META - {"managedFields"}:
        meta.pop(field, None)
    if rt.kind == "Namespace":
        obj.setdefault("status", {}).setdefault("phase", "Active")
    elif rt.kind == "Pod":
        status = obj.setdefault("status", {})
        if not status.get("phase"):
            status["phase"] = "Pending"
    elif rt.kind == "Secret" and rt.group == "" and not obj.get("type"):
        obj["type"] = "Opaque"  # `kubectl create secret generic` sends type ""
    elif rt.kind == "CustomResourceDefinition" and rt.group == "apiextensions.k8s.io":
        _establish_crd(store, obj)


def _establish_crd(store: KubeStore, crd: dict) -> None:
    spec = crd.get("spec")
    names = (spec or {}).get("names") if isinstance(spec, dict) else None
    if not isinstance(names, dict) or not spec.get("group") or not names.get("plural") or not names.get("kind"):
        raise invalid(f'CustomResourceDefinition.apiextensions.k8s.io "{crd["metadata"].get("name")}" is invalid: '
                       "spec.group, spec.names.plural and spec.names.kind are required")
    expected = f'{names["plural"]}.{spec["group"]}'
    if crd["metadata"].get("name") != expected:
        raise invalid(f'CustomResourceDefinition.apiextensions.k8s.io "{crd["metadata"].get("name")}" is invalid: '
                       f'metadata.name: Invalid value: must be spec.names.plural+"."+spec.group ({expected})')
    versions = spec.get("versions")
    if not isinstance(versions, list) or not versions or not all(isinstance(v, dict) and v.get("name")
                                                                    for v in versions):
        raise invalid(f'CustomResourceDefinition.apiextensions.k8s.io "{expected}" is invalid: '
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


def finish_update(store: KubeStore, rt: ResourceType, current: dict, new: dict, sent_rv: str | None,
                   dry: bool, manager: str | None, status_only: bool = False, always_track: bool = False) -> dict:
    """Store `new` over `current`: identity kept, status rules applied, ownership recorded."""
    if not isinstance(new, dict):
        raise invalid("the patched object is not an object")
    meta = new.get("metadata")
    new["metadata"] = meta = dict(meta) if isinstance(meta, dict) else {}
    cur_meta = current["metadata"]
    if meta.get("name") not in (None, cur_meta["name"]):
        raise bad_request(f"the name of the object ({meta.get('name')}) does not match the name on the URL "
                           f"({cur_meta['name']})")
    if rt.namespaced and meta.get("namespace") not in (None, cur_meta.get("namespace")):
        raise bad_request("the namespace of the provided object does not match the namespace sent on the request")
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
        normalize(rt, new)
    if manager is not None and not status_only:
        track_update(current, new, rt, manager, store.sandbox.clock.rfc3339(), always=always_track)
    elif "managedFields" in cur_meta and not status_only:
        meta["managedFields"] = cur_meta["managedFields"]
    return store.replace(rt, new, check_rv=True, dry_run=dry)


def delete_cascade(store: KubeStore, rt: ResourceType, obj: dict) -> None:
    """What the namespace and CRD controllers would do next, done at once."""
    objects = store.data["objects"]

    def remove(key: str) -> None:
        gone = objects.pop(key)
        group, plural, _ = key.split("/", 2)
        store.delete_logged(group, plural, gone)
    if rt.kind == "Namespace" and rt.group == "":
        name = obj["metadata"]["name"]
        for key in [k for k, o in objects.items() if o.get("metadata", {}).get("namespace") == name]:
            remove(key)
        for key in [k for k in store.data["logs"] if k.startswith(name + "/")]:
            del store.data["logs"][key]
    elif rt.kind == "CustomResourceDefinition" and rt.group == "apiextensions.k8s.io":
        spec = obj.get("spec") or {}
        prefix = f'{spec.get("group", "")}/{(spec.get("names") or {}).get("plural", "")}/'
        for key in [k for k in objects if k.startswith(prefix)]:
            remove(key)
    elif rt.kind == "Pod" and rt.group == "":
        store.data["logs"].pop(f'{obj["metadata"].get("namespace")}/{obj["metadata"]["name"]}', None)
    store.sandbox.store.mark()
