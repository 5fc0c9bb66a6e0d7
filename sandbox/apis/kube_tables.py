"""Server-side printing: `meta.k8s.io/v1` Table answers, which is what `kubectl get` asks for.

kubectl sends `Accept: application/json;as=Table;v=v1;g=meta.k8s.io,...` and prints the cells it is
given; the server always answers with every column, priority-1 ("wide") ones included, and kubectl
hides those unless `-o wide` (https://kubernetes.io/docs/reference/using-api/api-concepts/#receiving-resources-as-tables).
Columns and cell values follow kube-apiserver's printers (kubernetes `pkg/printers/internalversion/
printers.go`): AGE and similar cells are already-humanised strings ("45s", "3m10s", "5h"); custom
resources get Name plus their CRD's `additionalPrinterColumns` (or Age); kinds without a printer get
Name and "Created At". Rows carry the object as `PartialObjectMetadata` unless `includeObject`
asks for the whole object or none.
"""

from __future__ import annotations

import datetime
import json
import re
from typing import Any, Callable

from ..stores.kube import KubeStore
from ..wire.http import Request
from ..wire.kube import ResourceType

Cell = Callable[[dict, float], Any]
NAME_DESC = "Name must be unique within a namespace."
AGE_DESC = ("CreationTimestamp is a timestamp representing the server time when this object was created. "
            "It is represented in RFC3339 form and is in UTC.")


def wants_table(req: Request) -> bool:
    return "as=Table" in (req.headers.get("Accept") or "")


# ---- time -------------------------------------------------------------------------------------------------
def _ts(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return datetime.datetime.strptime(value[:19], "%Y-%m-%dT%H:%M:%S").replace(
            tzinfo=datetime.timezone.utc).timestamp()
    except ValueError:
        return None


def human_duration(seconds: float) -> str:
    """k8s.io/apimachinery's duration.HumanDuration: the precision shrinks as the age grows."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        return f"{minutes}m" if s % 60 == 0 else f"{minutes}m{s % 60}s"
    if minutes < 180:
        return f"{minutes}m"
    hours = s // 3600
    if hours < 8:
        return f"{hours}h" if minutes % 60 == 0 else f"{hours}h{minutes % 60}m"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        return f"{hours // 24}d" if hours % 24 == 0 else f"{hours // 24}d{hours % 24}h"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        days = (hours // 24) % 365
        return f"{hours // 24 // 365}y" if days == 0 else f"{hours // 24 // 365}y{days}d"
    return f"{hours // 24 // 365}y"


def since(value: str | None, now: float) -> str:
    t = _ts(value)
    return "<unknown>" if t is None else human_duration(now - t)


def age(obj: dict, now: float) -> str:
    return since(obj["metadata"].get("creationTimestamp"), now)


# ---- cells of the built-in kinds ---------------------------------------------------------------------------
def _get(obj: Any, *path, default=None):
    for p in path:
        if isinstance(obj, dict):
            obj = obj.get(p)
        elif isinstance(obj, list) and isinstance(p, int) and -len(obj) <= p < len(obj):
            obj = obj[p]
        else:
            return default
    return default if obj is None else obj


def _selector(sel: dict | None) -> str:
    if not sel:
        return "<none>"
    parts = [f"{k}={v}" for k, v in sorted((sel.get("matchLabels") or {}).items())]
    for e in sel.get("matchExpressions") or []:
        values = ",".join(e.get("values") or [])
        op = e.get("operator", "")
        parts.append(f"{e.get('key')} {op.lower()} ({values})" if values else
                     (e.get("key", "") if op == "Exists" else f"!{e.get('key')}"))
    return ",".join(parts) or "<none>"


def _containers(obj: dict) -> list[dict]:
    return _get(obj, "spec", "template", "spec", "containers", default=[])


def _names(obj: dict) -> str:
    return ",".join(c.get("name", "") for c in _containers(obj)) or "<none>"


def _images(obj: dict) -> str:
    return ",".join(c.get("image", "") for c in _containers(obj)) or "<none>"


def _pod_status(pod: dict) -> str:
    if pod["metadata"].get("deletionTimestamp"):
        return "Terminating"
    reason = _get(pod, "status", "reason") or _get(pod, "status", "phase", default="Unknown")
    for cs in _get(pod, "status", "containerStatuses", default=[]):
        state = cs.get("state") or {}
        if (state.get("waiting") or {}).get("reason"):
            return state["waiting"]["reason"]
        if (state.get("terminated") or {}).get("reason") and reason == "Running":
            return state["terminated"]["reason"]
    return reason


def _pod_ready(pod: dict) -> str:
    statuses = _get(pod, "status", "containerStatuses", default=[])
    total = len(_get(pod, "spec", "containers", default=[]))
    return f"{sum(1 for c in statuses if c.get('ready'))}/{total}"


def _node_status(node: dict) -> str:
    ready = next((c.get("status") for c in _get(node, "status", "conditions", default=[]) if c.get("type") == "Ready"),
                 None)
    text = {"True": "Ready", "False": "NotReady"}.get(ready, "Unknown")
    return text + (",SchedulingDisabled" if _get(node, "spec", "unschedulable") else "")


def _node_roles(node: dict) -> str:
    roles = sorted(k.split("/", 1)[1] for k in (node["metadata"].get("labels") or {})
                   if k.startswith("node-role.kubernetes.io/") and "/" in k)
    return ",".join(roles) or "<none>"


def _address(node: dict, kind: str) -> str:
    return next((a["address"] for a in _get(node, "status", "addresses", default=[]) if a.get("type") == kind),
                "<none>")


def _ports(svc: dict) -> str:
    out = []
    for p in _get(svc, "spec", "ports", default=[]):
        text = f"{p.get('port')}:{p['nodePort']}" if p.get("nodePort") else str(p.get("port"))
        out.append(f"{text}/{p.get('protocol', 'TCP')}")
    return ",".join(out) or "<none>"


def _external_ip(svc: dict) -> str:
    kind = _get(svc, "spec", "type", default="ClusterIP")
    ingress = _get(svc, "status", "loadBalancer", "ingress", default=[])
    ips = [i.get("ip") or i.get("hostname") for i in ingress] + list(_get(svc, "spec", "externalIPs", default=[]))
    if ips:
        return ",".join(ips)
    if kind == "LoadBalancer":
        return "<pending>"
    return _get(svc, "spec", "externalName", default="<none>") if kind == "ExternalName" else "<none>"


def _job_status(job: dict) -> str:
    for cond in _get(job, "status", "conditions", default=[]):
        if cond.get("status") == "True" and cond.get("type") in ("Complete", "Failed", "Suspended", "FailureTarget"):
            return cond["type"]
    return "Running"


def _job_duration(job: dict, now: float) -> str:
    start = _ts(_get(job, "status", "startTime"))
    end = _ts(_get(job, "status", "completionTime"))
    return "" if start is None else human_duration((end or now) - start)


def _event_object(ev: dict) -> str:
    inv = ev.get("involvedObject") or ev.get("regarding") or {}
    return f"{str(inv.get('kind', '')).lower()}/{inv.get('name', '')}"


def _col(name: str, typ: str, cell: Cell, priority: int = 0, fmt: str = "", desc: str = "") -> tuple:
    return name, typ, fmt, priority, desc, cell


NAME = _col("Name", "string", lambda o, n: o["metadata"]["name"], fmt="name", desc=NAME_DESC)
AGE = _col("Age", "string", age, desc=AGE_DESC)
CREATED_AT = _col("Created At", "date", lambda o, n: o["metadata"].get("creationTimestamp"), desc=AGE_DESC)
I = "integer"

COLUMNS: dict[tuple[str, str], list[tuple]] = {
    ("", "pods"): [NAME, _col("Ready", "string", lambda o, n: _pod_ready(o)),
                   _col("Status", "string", lambda o, n: _pod_status(o)),
                   _col("Restarts", "string", lambda o, n: str(sum(c.get("restartCount", 0) for c in _get(
                       o, "status", "containerStatuses", default=[])))), AGE,
                   _col("IP", "string", lambda o, n: _get(o, "status", "podIP", default="<none>"), 1),
                   _col("Node", "string", lambda o, n: _get(o, "spec", "nodeName", default="<none>"), 1),
                   _col("Nominated Node", "string", lambda o, n: _get(o, "status", "nominatedNodeName",
                                                                      default="<none>"), 1),
                   _col("Readiness Gates", "string", lambda o, n: "<none>", 1)],
    ("", "nodes"): [NAME, _col("Status", "string", lambda o, n: _node_status(o)),
                    _col("Roles", "string", lambda o, n: _node_roles(o)), AGE,
                    _col("Version", "string", lambda o, n: _get(o, "status", "nodeInfo", "kubeletVersion", default="")),
                    _col("Internal-IP", "string", lambda o, n: _address(o, "InternalIP"), 1),
                    _col("External-IP", "string", lambda o, n: _address(o, "ExternalIP"), 1),
                    _col("OS-Image", "string", lambda o, n: _get(o, "status", "nodeInfo", "osImage", default=""), 1),
                    _col("Kernel-Version", "string", lambda o, n: _get(o, "status", "nodeInfo", "kernelVersion",
                                                                       default=""), 1),
                    _col("Container-Runtime", "string", lambda o, n: _get(o, "status", "nodeInfo",
                                                                          "containerRuntimeVersion", default=""), 1)],
    ("", "namespaces"): [NAME, _col("Status", "string", lambda o, n: _get(o, "status", "phase", default="")), AGE],
    ("", "services"): [NAME, _col("Type", "string", lambda o, n: _get(o, "spec", "type", default="ClusterIP")),
                       _col("Cluster-IP", "string", lambda o, n: _get(o, "spec", "clusterIP", default="<none>")),
                       _col("External-IP", "string", lambda o, n: _external_ip(o)),
                       _col("Port(s)", "string", lambda o, n: _ports(o)), AGE,
                       _col("Selector", "string", lambda o, n: ",".join(
                           f"{k}={v}" for k, v in sorted((_get(o, "spec", "selector") or {}).items())) or "<none>", 1)],
    ("apps", "deployments"): [
        NAME, _col("Ready", "string", lambda o, n: f"{_get(o, 'status', 'readyReplicas', default=0)}/"
                                                   f"{_get(o, 'spec', 'replicas', default=1)}"),
        _col("Up-to-date", I, lambda o, n: _get(o, "status", "updatedReplicas", default=0)),
        _col("Available", I, lambda o, n: _get(o, "status", "availableReplicas", default=0)), AGE,
        _col("Containers", "string", lambda o, n: _names(o), 1), _col("Images", "string", lambda o, n: _images(o), 1),
        _col("Selector", "string", lambda o, n: _selector(_get(o, "spec", "selector")), 1)],
    ("apps", "replicasets"): [
        NAME, _col("Desired", I, lambda o, n: _get(o, "spec", "replicas", default=1)),
        _col("Current", I, lambda o, n: _get(o, "status", "replicas", default=0)),
        _col("Ready", I, lambda o, n: _get(o, "status", "readyReplicas", default=0)), AGE,
        _col("Containers", "string", lambda o, n: _names(o), 1), _col("Images", "string", lambda o, n: _images(o), 1),
        _col("Selector", "string", lambda o, n: _selector(_get(o, "spec", "selector")), 1)],
    ("apps", "daemonsets"): [
        NAME, _col("Desired", I, lambda o, n: _get(o, "status", "desiredNumberScheduled", default=0)),
        _col("Current", I, lambda o, n: _get(o, "status", "currentNumberScheduled", default=0)),
        _col("Ready", I, lambda o, n: _get(o, "status", "numberReady", default=0)),
        _col("Up-to-date", I, lambda o, n: _get(o, "status", "updatedNumberScheduled", default=0)),
        _col("Available", I, lambda o, n: _get(o, "status", "numberAvailable", default=0)),
        _col("Node Selector", "string", lambda o, n: ",".join(f"{k}={v}" for k, v in sorted(
            (_get(o, "spec", "template", "spec", "nodeSelector") or {}).items())) or "<none>"), AGE,
        _col("Containers", "string", lambda o, n: _names(o), 1), _col("Images", "string", lambda o, n: _images(o), 1),
        _col("Selector", "string", lambda o, n: _selector(_get(o, "spec", "selector")), 1)],
    ("apps", "statefulsets"): [
        NAME, _col("Ready", "string", lambda o, n: f"{_get(o, 'status', 'readyReplicas', default=0)}/"
                                                   f"{_get(o, 'spec', 'replicas', default=1)}"), AGE,
        _col("Containers", "string", lambda o, n: _names(o), 1), _col("Images", "string", lambda o, n: _images(o), 1)],
    ("batch", "jobs"): [
        NAME, _col("Status", "string", lambda o, n: _job_status(o)),
        _col("Completions", "string", lambda o, n: f"{_get(o, 'status', 'succeeded', default=0)}/"
                                                   f"{_get(o, 'spec', 'completions', default=1)}"),
        _col("Duration", "string", _job_duration), AGE,
        _col("Containers", "string", lambda o, n: _names(o), 1), _col("Images", "string", lambda o, n: _images(o), 1),
        _col("Selector", "string", lambda o, n: _selector(_get(o, "spec", "selector")), 1)],
    ("", "configmaps"): [NAME, _col("Data", I, lambda o, n: len(o.get("data") or {}) + len(o.get("binaryData") or {})),
                         AGE],
    ("", "secrets"): [NAME, _col("Type", "string", lambda o, n: o.get("type", "Opaque")),
                      _col("Data", I, lambda o, n: len(o.get("data") or {})), AGE],
    ("", "serviceaccounts"): [NAME, _col("Secrets", I, lambda o, n: len(o.get("secrets") or [])), AGE],
    ("", "events"): [
        _col("Last Seen", "string", lambda o, n: since(o.get("lastTimestamp") or o.get("eventTime")
                                                       or o["metadata"].get("creationTimestamp"), n)),
        _col("Type", "string", lambda o, n: o.get("type", "")), _col("Reason", "string", lambda o, n: o.get("reason", "")),
        _col("Object", "string", lambda o, n: _event_object(o)), _col("Message", "string", lambda o, n: o.get("message", "")),
        _col("Subobject", "string", lambda o, n: _get(o, "involvedObject", "fieldPath", default=""), 1),
        _col("Source", "string", lambda o, n: _get(o, "source", "component", default=""), 1),
        _col("First Seen", "string", lambda o, n: since(o.get("firstTimestamp"), n), 1),
        _col("Count", I, lambda o, n: o.get("count", 1), 1), _col("Name", "string", lambda o, n: o["metadata"]["name"], 1)],
    ("storage.k8s.io", "storageclasses"): [
        _col("Name", "string", lambda o, n: o["metadata"]["name"] + (
            " (default)" if (o["metadata"].get("annotations") or {}).get(
                "storageclass.kubernetes.io/is-default-class") == "true" else ""), fmt="name", desc=NAME_DESC),
        _col("Provisioner", "string", lambda o, n: o.get("provisioner", "")),
        _col("ReclaimPolicy", "string", lambda o, n: o.get("reclaimPolicy", "Delete")),
        _col("VolumeBindingMode", "string", lambda o, n: o.get("volumeBindingMode", "Immediate")),
        _col("AllowVolumeExpansion", "boolean", lambda o, n: bool(o.get("allowVolumeExpansion"))), AGE],
    ("", "persistentvolumeclaims"): [
        NAME, _col("Status", "string", lambda o, n: _get(o, "status", "phase", default="Pending")),
        _col("Volume", "string", lambda o, n: _get(o, "spec", "volumeName", default="")),
        _col("Capacity", "string", lambda o, n: _get(o, "status", "capacity", "storage", default="")),
        _col("Access Modes", "string", lambda o, n: ",".join(
            {"ReadWriteOnce": "RWO", "ReadOnlyMany": "ROX", "ReadWriteMany": "RWX", "ReadWriteOncePod": "RWOP"}.get(m, m)
            for m in _get(o, "status", "accessModes", default=[]))),
        _col("StorageClass", "string", lambda o, n: _get(o, "spec", "storageClassName", default="")),
        _col("VolumeAttributesClass", "string", lambda o, n: "<unset>"), AGE,
        _col("VolumeMode", "string", lambda o, n: _get(o, "spec", "volumeMode", default="Filesystem"), 1)],
    ("coordination.k8s.io", "leases"): [NAME, _col("Holder", "string", lambda o, n: _get(
        o, "spec", "holderIdentity", default="")), AGE],
}


# ---- custom resources --------------------------------------------------------------------------------------
_FILTER = re.compile(r"^\[\?\(@\.([\w.]+)\s*==\s*['\"]([^'\"]*)['\"]\)\]")
_INDEX = re.compile(r"^\[(\d+)\]")
_KEY = re.compile(r"^\.([\w-]+)")


def json_path(obj: Any, path: str) -> Any:
    """The subset of JSONPath printer columns use: `.a.b`, `.a[0]`, `.a[?(@.type=="Ready")].status`."""
    rest = path.strip().removeprefix("{").removesuffix("}")
    cur = obj
    while rest:
        if m := _KEY.match(rest):
            cur = cur.get(m.group(1)) if isinstance(cur, dict) else None
        elif m := _INDEX.match(rest):
            idx = int(m.group(1))
            cur = cur[idx] if isinstance(cur, list) and idx < len(cur) else None
        elif m := _FILTER.match(rest):
            field, value = m.group(1), m.group(2)
            cur = next((i for i in cur if isinstance(i, dict) and str(json_path(i, "." + field)) == value), None) \
                if isinstance(cur, list) else None
        else:
            return None
        rest = rest[m.end():]
        if cur is None:
            return None
    return cur


def _crd_columns(store: KubeStore, rt: ResourceType) -> list[tuple]:
    crd = store.get_object("apiextensions.k8s.io", "customresourcedefinitions", None, f"{rt.plural}.{rt.group}")
    version = next((v for v in (crd or {}).get("spec", {}).get("versions", []) if v.get("name") == rt.version), {})
    cols = [NAME]
    for c in version.get("additionalPrinterColumns") or [{"name": "Age", "type": "date",
                                                            "jsonPath": ".metadata.creationTimestamp"}]:
        typ, path = c.get("type", "string"), c.get("jsonPath", "")

        def cell(o, n, typ=typ, path=path):
            value = json_path(o, path)
            if value is None:
                return None
            if typ == "date":  # converted on the server to a duration, the column type stays "date"
                return since(value, n) if isinstance(value, str) else "<invalid>"
            if typ == "string" and not isinstance(value, str):
                return json.dumps(value)
            return value
        cols.append(_col(c.get("name", ""), typ, cell, int(c.get("priority", 0)), c.get("format", ""),
                         c.get("description") or f"Custom resource definition column (in JSONPath format): {path}"))
    return cols


def columns(store: KubeStore, rt: ResourceType) -> list[tuple]:
    cols = COLUMNS.get((rt.group, rt.plural))
    if cols is not None:
        return cols
    if rt.group == "apiextensions.k8s.io" and rt.plural == "customresourcedefinitions":
        return [NAME, CREATED_AT]
    if any(t.group == rt.group and t.plural == rt.plural for t in store.crd_types()):
        return _crd_columns(store, rt)
    return [NAME, CREATED_AT]


# ---- the Table ---------------------------------------------------------------------------------------------
def _row_object(obj: dict, req: Request) -> dict | None:
    include = req.param("includeObject") or "Metadata"
    if include == "None":
        return None
    if include == "Object":
        return obj
    return {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj["metadata"]}


def table(store: KubeStore, rt: ResourceType, objs: list[dict], req: Request, resource_version: str,
          headers: bool = True) -> dict:
    """A Table of `objs` with every column (kubectl hides priority-1 ones itself unless -o wide)."""
    cols = columns(store, rt)
    now = store.sandbox.clock.now()
    rows = []
    for obj in objs:
        row = {"cells": [cell(obj, now) for *_, cell in cols]}
        item = _row_object(obj, req)
        if item is not None:
            row["object"] = item
        rows.append(row)
    definitions = [{"name": name, "type": typ, "format": fmt, "description": desc, "priority": priority}
                   for name, typ, fmt, priority, desc, _ in cols] if headers else None
    return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": resource_version},
            "columnDefinitions": definitions, "rows": rows}
