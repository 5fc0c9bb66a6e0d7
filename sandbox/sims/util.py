"""Helpers shared by the simulated controllers (`sim_*.py`): selectors, taints, events, writes.

Controllers run under the state lock before every request, so these helpers never copy an
object unless it is about to change, and never write (nor mark the store dirty) when nothing
changed.
"""

from __future__ import annotations

import copy
import hashlib
import uuid
from typing import TYPE_CHECKING, Any, Iterable
from urllib.parse import unquote

from ..core import ApiError, kube_id_for_gke
from ..stores.kube import KubeStore, RT_CRD, RT_EVENT, RT_NAMESPACE
from ..wire.kube import ResourceType

if TYPE_CHECKING:
    from ..core import SandboxContext as Sandbox

GPU = "nvidia.com/gpu"
HOST_PROFILE = "sandbox.gpuplat.io/host-profile"
GKE_POOL_LABEL = "cloud.google.com/gke-nodepool"



# ---- state ----------------------------------------------------------------------------------------
def sim_meta(kube: KubeStore, name: str) -> dict:
    """A simulation's private state under the cluster's `data["meta"]` (created empty, unmarked)."""
    return kube.data["meta"].setdefault(name, {})


def kube_clusters(sb: "Sandbox") -> Iterable[KubeStore]:
    """The clusters a simulation runs for: those of the pass under way (`Sandbox.reconcile`), else all."""
    clusters = sb.store.section("kube")
    scope = getattr(sb, "reconcile_scope", None)
    for cid in list(clusters) if scope is None else scope:
        data = clusters.get(cid)
        if isinstance(data, dict) and "objects" in data:
            yield KubeStore(sb, cid, data)


def scan(kube: KubeStore, *kinds: tuple[str, str]) -> dict[tuple[str, str], list[dict]]:
    """Objects of several (group, plural) kinds in one pass over the cluster's store."""
    out: dict[tuple[str, str], list[dict]] = {k: [] for k in kinds}
    for key, obj in kube.data["objects"].items():
        group, plural, _ = key.split("/", 2)
        bucket = out.get((group, plural))
        if bucket is not None:
            bucket.append(obj)
    return out


def resolve_cluster(sb: "Sandbox", name: str | None, must_exist: bool = True) -> str:
    """`projects/P/locations/L/clusters/C` (URL-encoded or not) or a sandbox cluster id -> cluster id."""
    name = unquote(name or "")
    if not name:
        raise ApiError(400, "a `cluster` is required: a sandbox cluster id or projects/P/locations/L/clusters/C")
    if name.startswith("projects/"):
        parts = name.split("/")
        if len(parts) != 6 or parts[2] != "locations" or parts[4] != "clusters":
            raise ApiError(400, f"cluster {name!r} is not projects/P/locations/L/clusters/C")
        cid = kube_id_for_gke(parts[1], parts[3], parts[5])
    else:
        cid = name
    if must_exist and cid not in sb.store.section("kube"):
        known = ", ".join(sorted(sb.store.section("kube"))) or "none"
        raise ApiError(404, f"no sandbox cluster {name!r} (known: {known})")
    return cid


def gke_cluster_kube_id(cluster_name: str) -> str | None:
    """The kube cluster id behind a GKE resource name projects/P/locations/L/clusters/C."""
    parts = (cluster_name or "").split("/")
    if len(parts) == 6 and parts[0] == "projects" and parts[2] == "locations" and parts[4] == "clusters":
        return kube_id_for_gke(parts[1], parts[3], parts[5])
    return None


# ---- pods, nodes, selectors -------------------------------------------------------------------------
def gpu_request(pod: dict) -> int:
    """GPUs a pod asks for: requests, else limits (extended resources default requests to limits)."""
    spec = pod.get("spec") or {}

    def one(c: dict) -> int:
        res = c.get("resources") or {}
        val = (res.get("requests") or {}).get(GPU, (res.get("limits") or {}).get(GPU, 0))
        try:
            return int(str(val))
        except ValueError:
            return 0

    main = sum(one(c) for c in spec.get("containers") or [])
    init = max((one(c) for c in spec.get("initContainers") or []), default=0)
    return max(main, init)


def pod_active(pod: dict) -> bool:
    return (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed") and not \
        pod["metadata"].get("deletionTimestamp")


def node_gpus(node: dict) -> int:
    val = ((node.get("status") or {}).get("allocatable") or {}).get(GPU, 0)
    try:
        return int(str(val))
    except ValueError:
        return 0


def match_selector(selector: dict | None, labels: dict | None, empty_matches: bool = True) -> bool:
    """A metav1.LabelSelector against labels (In, NotIn, Exists, DoesNotExist)."""
    labels = labels or {}
    if not selector or (not selector.get("matchLabels") and not selector.get("matchExpressions")):
        return empty_matches
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != _label_str(v):
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op = expr.get("key"), expr.get("operator")
        values = [_label_str(v) for v in expr.get("values") or []]
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def _label_str(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def tolerates(tolerations: list[dict] | None, taint: dict) -> bool:
    for tol in tolerations or []:
        if tol.get("effect") and tol["effect"] != taint.get("effect"):
            continue
        op = tol.get("operator") or "Equal"
        if not tol.get("key") and op == "Exists":
            return True
        if tol.get("key") != taint.get("key"):
            continue
        if op == "Exists" or (tol.get("value") or "") == (taint.get("value") or ""):
            return True
    return False


def fits_node(pod: dict, node: dict) -> tuple[bool, str]:
    """Node selector, required node affinity (matchExpressions) and NoSchedule/NoExecute taints."""
    spec = pod.get("spec") or {}
    labels = node["metadata"].get("labels") or {}
    for k, v in (spec.get("nodeSelector") or {}).items():
        if labels.get(k) != v:
            return False, "didn't match Pod's node affinity/selector"
    req = (((spec.get("affinity") or {}).get("nodeAffinity") or {})
           .get("requiredDuringSchedulingIgnoredDuringExecution") or {})
    terms = req.get("nodeSelectorTerms") or []
    if terms and not any(match_selector({"matchExpressions": t.get("matchExpressions") or []}, labels)
                         for t in terms):
        return False, "didn't match Pod's node affinity/selector"
    for taint in (node.get("spec") or {}).get("taints") or []:
        if taint.get("effect") in ("NoSchedule", "NoExecute") and not tolerates(spec.get("tolerations"), taint):
            return False, f"had untolerated taint {{{taint.get('key')}: {taint.get('value', '')}}}".replace(": }", "}")
    if (node.get("spec") or {}).get("unschedulable"):
        return False, "were unschedulable"
    return True, ""


# ---- writes ---------------------------------------------------------------------------------------
def write_status(kube: KubeStore, rt: ResourceType, obj: dict, status: dict) -> dict:
    """Replace `status` when it differs (a status-only write keeps the generation)."""
    if obj.get("status") == status:
        return obj
    return kube.replace(rt, {**obj, "status": status}, check_rv=False)


def write_fields(kube: KubeStore, rt: ResourceType, obj: dict, **fields: Any) -> dict:
    """Replace top-level fields (`spec`, `data`, ...) that differ; nothing when all are equal."""
    if all(obj.get(k) == v for k, v in fields.items()):
        return obj
    return kube.replace(rt, {**obj, **fields}, check_rv=False)


def write_meta(kube: KubeStore, rt: ResourceType, obj: dict, labels: dict | None = None,
               annotations: dict | None = None) -> dict:
    """Set (value) or remove (None) labels/annotations when they differ."""
    meta = obj["metadata"]
    new_meta = None
    for field, changes in (("labels", labels), ("annotations", annotations)):
        if not changes:
            continue
        cur = meta.get(field) or {}
        if all(cur.get(k) == v if v is not None else k not in cur for k, v in changes.items()):
            continue
        new_meta = new_meta or copy.deepcopy(meta)
        target = new_meta.setdefault(field, {})
        for k, v in changes.items():
            if v is None:
                target.pop(k, None)
            else:
                target[k] = v
    if new_meta is None:
        return obj
    return kube.replace(rt, {**obj, "metadata": new_meta}, check_rv=False)


def ensure(kube: KubeStore, rt: ResourceType, obj: dict) -> dict:
    """Create `obj`, or bring an existing one's labels, annotations and top-level fields to it."""
    meta = obj["metadata"]
    ns = meta.get("namespace") if rt.namespaced else None
    cur = kube.get_object(rt.group, rt.plural, ns, meta["name"])
    if cur is None:
        return kube.create(rt, obj, ns)
    cur = write_meta(kube, rt, cur, labels=meta.get("labels"), annotations=meta.get("annotations"))
    fields = {k: v for k, v in obj.items() if k not in ("metadata", "apiVersion", "kind")}
    return write_fields(kube, rt, cur, **fields)


def helm_workload(kind: str, name: str, chart: str, app_version: str, release: str, namespace: str,
                  app_name: str, image: str, part_of: str = "") -> dict:
    """A ready Deployment/StatefulSet as `helm install` of `chart` leaves it once its pods are up
    (`app_name`: its app.kubernetes.io/name label, as the chart sets it)."""
    component = name.removeprefix(f"{release}-").removeprefix("argocd-")
    labels = {"app.kubernetes.io/name": app_name, "app.kubernetes.io/instance": release,
              "app.kubernetes.io/component": component, "app.kubernetes.io/managed-by": "Helm",
              "helm.sh/chart": chart, "app.kubernetes.io/version": app_version}
    if part_of:
        labels["app.kubernetes.io/part-of"] = part_of
    selector = {"matchLabels": {"app.kubernetes.io/name": app_name, "app.kubernetes.io/instance": release}}
    spec: dict[str, Any] = {"replicas": 1, "selector": selector,
                            "template": {"metadata": {"labels": dict(selector["matchLabels"])},
                                         "spec": {"containers": [{"name": component,
                                                                  "image": f"{image}:{app_version}"}]}}}
    if kind == "Deployment":
        status = {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "readyReplicas": 1,
                  "availableReplicas": 1,
                  "conditions": [{"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable",
                                  "message": "Deployment has minimum availability."},
                                 {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable",
                                  "message": f'ReplicaSet "{name}-{short_hash(name, chart)}" has successfully '
                                             f"progressed."}]}
    else:
        spec["serviceName"] = name
        status = {"observedGeneration": 1, "replicas": 1, "readyReplicas": 1, "currentReplicas": 1,
                  "updatedReplicas": 1, "availableReplicas": 1}
    return {"apiVersion": "apps/v1", "kind": kind,
            "metadata": {"name": name, "namespace": namespace, "labels": labels,
                         "annotations": {"meta.helm.sh/release-name": release,
                                         "meta.helm.sh/release-namespace": namespace}},
            "spec": spec, "status": status}


def ensure_namespace(kube: KubeStore, name: str) -> None:
    if kube.get_object("", "namespaces", None, name) is None:
        kube.create(RT_NAMESPACE, {"metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name}},
                                   "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}})


def crd(group: str, version: str, plural: str, kind: str, namespaced: bool = True,
        short: tuple[str, ...] = (), status_subresource: bool = True, categories: tuple[str, ...] = (),
        columns: tuple[dict, ...] = ()) -> dict:
    """A CustomResourceDefinition with an open schema (the sandbox validates nothing beyond names) and
    the project's own `additionalPrinterColumns`, which `kubectl get` shows."""
    names = {"plural": plural, "singular": kind.lower(), "kind": kind, "listKind": f"{kind}List"}
    if short:
        names["shortNames"] = list(short)
    if categories:
        names["categories"] = list(categories)
    ver = {"name": version, "served": True, "storage": True,
           "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}}
    if status_subresource:
        ver["subresources"] = {"status": {}}
    if columns:
        ver["additionalPrinterColumns"] = list(columns)
    return {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}"},
        "spec": {"group": group, "names": names, "scope": "Namespaced" if namespaced else "Cluster",
                 "versions": [ver]},
        "status": {"acceptedNames": names, "storedVersions": [version],
                   "conditions": [{"type": "NamesAccepted", "status": "True", "reason": "NoConflicts"},
                                  {"type": "Established", "status": "True", "reason": "InitialNamesAccepted"}]},
    }


def ensure_crd(kube: KubeStore, definition: dict, labels: dict | None = None) -> bool:
    """Create the CRD when absent (never rewrites one a user or gpuplat applied). True if created."""
    if kube.get_object(RT_CRD.group, RT_CRD.plural, None, definition["metadata"]["name"]) is not None:
        return False
    definition = copy.deepcopy(definition)
    if labels:
        definition["metadata"]["labels"] = dict(labels)
    kube.create(RT_CRD, definition)
    return True


def has_crd(kube: KubeStore, name: str) -> bool:
    return kube.get_object(RT_CRD.group, RT_CRD.plural, None, name) is not None


def condition(ctype: str, status: bool | str, reason: str, message: str, now: str,
              previous: list[dict] | None = None) -> dict:
    """A status condition that keeps lastTransitionTime while its status does not change."""
    status = ("True" if status else "False") if isinstance(status, bool) else status
    for prev in previous or []:
        if prev.get("type") == ctype and prev.get("status") == status and prev.get("lastTransitionTime"):
            now = prev["lastTransitionTime"]
    return {"type": ctype, "status": status, "reason": reason, "message": message, "lastTransitionTime": now}


def record_event(sb: "Sandbox", kube: KubeStore, obj: dict, reason: str, message: str,
                 etype: str = "Normal", component: str = "sandbox") -> dict:
    """A core/v1 Event about `obj`, as the named component would post it."""
    meta = obj["metadata"]
    ns = meta.get("namespace") or "default"
    now = sb.clock.rfc3339()
    event = {
        "metadata": {"name": f"{meta['name']}.{uuid.uuid4().hex[:16]}", "namespace": ns},
        "involvedObject": {"apiVersion": obj.get("apiVersion", "v1"), "kind": obj.get("kind", "Pod"),
                           "name": meta["name"], "namespace": meta.get("namespace"), "uid": meta.get("uid"),
                           "resourceVersion": meta.get("resourceVersion")},
        "reason": reason, "message": message, "type": etype, "count": 1,
        "source": {"component": component}, "reportingComponent": component,
        "firstTimestamp": now, "lastTimestamp": now,
    }
    if not meta.get("namespace"):
        event["involvedObject"].pop("namespace")
    return kube.create(RT_EVENT, event, ns)


def owner_ref(obj: dict, controller: bool = True) -> dict:
    return {"apiVersion": obj["apiVersion"], "kind": obj["kind"], "name": obj["metadata"]["name"],
            "uid": obj["metadata"]["uid"], "controller": controller, "blockOwnerDeletion": True}


def short_hash(*parts: str, n: int = 10) -> str:
    return hashlib.sha1("\x00".join(parts).encode()).hexdigest()[:n]


def image_id(image: str) -> str:
    """A plausible `imageID` (digest) for a container status: the official client requires one."""
    repo = image.split("@")[0].rsplit(":", 1)[0] if image else "unknown"
    return f"{repo}@sha256:{hashlib.sha256(image.encode()).hexdigest()}"


def running_status(sb: "Sandbox", node: dict | None, pod: dict) -> dict:
    """The status the kubelet reports for a started pod."""
    now = sb.clock.rfc3339()
    host_ip = None
    for addr in ((node or {}).get("status") or {}).get("addresses") or []:
        if addr.get("type") == "InternalIP":
            host_ip = addr.get("address")
    containers = (pod.get("spec") or {}).get("containers") or []
    status = {
        "phase": "Running", "startTime": now, "qosClass": "BestEffort",
        "conditions": [{"type": t, "status": "True", "lastTransitionTime": now}
                       for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready")],
        "containerStatuses": [{"name": c.get("name", "main"), "image": c.get("image", ""),
                               "imageID": image_id(c.get("image", "")), "ready": True,
                               "started": True, "restartCount": 0,
                               "state": {"running": {"startedAt": now}}} for c in containers],
    }
    if host_ip:
        status["hostIP"] = host_ip
        status["podIP"] = "10.64." + ".".join(str(int(x, 16) % 250 + 1) for x in
                                               (short_hash(pod["metadata"]["name"], n=2),
                                                short_hash(pod["metadata"]["name"], "ip", n=2)))
    return status
