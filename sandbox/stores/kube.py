"""Object storage of the sandbox's Kubernetes clusters: one store per cluster.

The HTTP face of it (discovery, CRUD, patches, selectors) lives in `kube.py`; the simulated GKE
node pools and other controllers also write here directly, as a real cloud's controllers write to
a real API server.
"""

from __future__ import annotations

import copy
import json
import threading
import uuid
from collections import deque
from typing import TYPE_CHECKING, Iterable

from ..core import ApiError
from ..wire.kube import ResourceType

if TYPE_CHECKING:
    from ..core import SandboxContext as Sandbox


def _rt(group, version, plural, kind, namespaced, short=(), sub=()):
    return ResourceType(group, version, plural, kind, namespaced, tuple(short), tuple(sub))


# The built-in kinds gpuplat and the official clients need, with the real API's names.
BUILTIN_TYPES: tuple[ResourceType, ...] = (
    _rt("", "v1", "namespaces", "Namespace", False, ("ns",), ("status",)),
    _rt("", "v1", "nodes", "Node", False, ("no",), ("status",)),
    _rt("", "v1", "pods", "Pod", True, ("po",), ("status", "log")),
    _rt("", "v1", "services", "Service", True, ("svc",), ("status",)),
    _rt("", "v1", "secrets", "Secret", True),
    _rt("", "v1", "configmaps", "ConfigMap", True, ("cm",)),
    _rt("", "v1", "events", "Event", True, ("ev",)),
    _rt("", "v1", "serviceaccounts", "ServiceAccount", True, ("sa",)),
    _rt("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim", True, ("pvc",), ("status",)),
    _rt("storage.k8s.io", "v1", "storageclasses", "StorageClass", False, ("sc",)),
    _rt("storage.k8s.io", "v1", "csidrivers", "CSIDriver", False),
    _rt("apps", "v1", "deployments", "Deployment", True, ("deploy",), ("status", "scale")),
    _rt("apps", "v1", "daemonsets", "DaemonSet", True, ("ds",), ("status",)),
    _rt("apps", "v1", "statefulsets", "StatefulSet", True, ("sts",), ("status", "scale")),
    _rt("apps", "v1", "replicasets", "ReplicaSet", True, ("rs",), ("status", "scale")),
    _rt("batch", "v1", "jobs", "Job", True, (), ("status",)),
    _rt("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget", True, ("pdb",), ("status",)),
    _rt("apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition", False,
        ("crd", "crds"), ("status",)),
    _rt("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", False),
    _rt("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", False),
    # Common kinds a platform's manifests carry, so `kubectl apply -f` of ordinary YAML works too.
    _rt("", "v1", "persistentvolumes", "PersistentVolume", False, ("pv",), ("status",)),
    _rt("", "v1", "endpoints", "Endpoints", True, ("ep",)),
    _rt("", "v1", "resourcequotas", "ResourceQuota", True, ("quota",), ("status",)),
    _rt("", "v1", "limitranges", "LimitRange", True, ("limits",)),
    _rt("batch", "v1", "cronjobs", "CronJob", True, ("cj",), ("status",)),
    _rt("networking.k8s.io", "v1", "ingresses", "Ingress", True, ("ing",), ("status",)),
    _rt("networking.k8s.io", "v1", "ingressclasses", "IngressClass", False),
    _rt("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy", True, ("netpol",)),
    _rt("coordination.k8s.io", "v1", "leases", "Lease", True),
    _rt("scheduling.k8s.io", "v1", "priorityclasses", "PriorityClass", False, ("pc",)),
    _rt("rbac.authorization.k8s.io", "v1", "roles", "Role", True),
    _rt("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding", True),
    # Reviews: answered, never stored (`kubectl auth can-i`, `kubectl auth whoami`).
    ResourceType("authorization.k8s.io", "v1", "selfsubjectaccessreviews", "SelfSubjectAccessReview", False,
                 verbs=("create",)),
    ResourceType("authentication.k8s.io", "v1", "selfsubjectreviews", "SelfSubjectReview", False, verbs=("create",)),
)

# The types the simulations and APIs write, spelled out so that a write needs no discovery walk.
RT_NAMESPACE = ResourceType("", "v1", "namespaces", "Namespace", False)
RT_NODE = ResourceType("", "v1", "nodes", "Node", False)
RT_POD = ResourceType("", "v1", "pods", "Pod", True)
RT_EVENT = ResourceType("", "v1", "events", "Event", True)
RT_LEASE = ResourceType("coordination.k8s.io", "v1", "leases", "Lease", True)
RT_SECRET = ResourceType("", "v1", "secrets", "Secret", True)
RT_SERVICEACCOUNT = ResourceType("", "v1", "serviceaccounts", "ServiceAccount", True)
RT_DEPLOYMENT = ResourceType("apps", "v1", "deployments", "Deployment", True)
RT_STATEFULSET = ResourceType("apps", "v1", "statefulsets", "StatefulSet", True)
RT_DAEMONSET = ResourceType("apps", "v1", "daemonsets", "DaemonSet", True)
RT_REPLICASET = ResourceType("apps", "v1", "replicasets", "ReplicaSet", True)
RT_JOB = ResourceType("batch", "v1", "jobs", "Job", True)
RT_PDB = ResourceType("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget", True)
RT_CRD = ResourceType("apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition", False)
RT_STORAGECLASS = ResourceType("storage.k8s.io", "v1", "storageclasses", "StorageClass", False)
RT_CSIDRIVER = ResourceType("storage.k8s.io", "v1", "csidrivers", "CSIDriver", False)
RT_APPLICATION = ResourceType("argoproj.io", "v1alpha1", "applications", "Application", True)
RT_APPLICATIONSET = ResourceType("argoproj.io", "v1alpha1", "applicationsets", "ApplicationSet", True)
RT_EXTERNALSECRET = ResourceType("external-secrets.io", "v1", "externalsecrets", "ExternalSecret", True)
RT_CLUSTERSECRETSTORE = ResourceType("external-secrets.io", "v1", "clustersecretstores", "ClusterSecretStore", False)
RT_SECRETSTORE = ResourceType("external-secrets.io", "v1", "secretstores", "SecretStore", True)
RT_CLUSTERPOLICY = ResourceType("nvidia.com", "v1", "clusterpolicies", "ClusterPolicy", False)


# Lookups by URL path and by apiVersion/kind: built-ins never need the CRD scan.
_BUILTIN_BY_PATH = {(rt.group, rt.version, rt.plural): rt for rt in BUILTIN_TYPES}
_BUILTIN_BY_KIND = {(rt.group, rt.version, rt.kind): rt for rt in BUILTIN_TYPES}
_CRD_PREFIX = "apiextensions.k8s.io/customresourcedefinitions/"


class ChangeLog:
    """What changed in one cluster, oldest first, for watches; in memory only (a restarted sandbox
    answers a watch from an older resourceVersion with 410 Expired, and clients relist, as they do
    after an etcd compaction).

    Entries are (resourceVersion, event type, group, plural, namespace, object as JSON): serialised
    when recorded, because the stored object may be changed in place later.
    """

    def __init__(self, lock, floor: int, size: int = 4096):
        self.entries: deque = deque(maxlen=size)
        self.cond = threading.Condition(lock)
        self.floor = floor  # changes at or below this resourceVersion are not in the log

    def record(self, event: str, group: str, plural: str, obj: dict) -> None:
        meta = obj["metadata"]
        if len(self.entries) == self.entries.maxlen:
            self.floor = self.entries[0][0]
        self.entries.append((int(meta["resourceVersion"]), event, group, plural, meta.get("namespace"),
                             json.dumps(obj, separators=(",", ":"))))
        self.cond.notify_all()

    def since(self, rv: int) -> list[tuple]:
        return [e for e in self.entries if e[0] > rv]


class KubeStore:
    """One Kubernetes cluster's objects, in the sandbox state under `kube/<cluster id>`."""

    def __init__(self, sandbox: "Sandbox", cluster_id: str, data: dict):
        self.sandbox = sandbox
        self.cluster_id = cluster_id
        self.data = data
        data.setdefault("rv", 1)
        data.setdefault("objects", {})
        data.setdefault("logs", {})
        data.setdefault("meta", {})

    # ---- resource types -------------------------------------------------------------------
    def types(self) -> list[ResourceType]:
        """Built-in types plus every established CRD's served versions."""
        return [*BUILTIN_TYPES, *self.crd_types()]

    def crd_types(self) -> list[ResourceType]:
        """The served versions of every CustomResourceDefinition, one type each."""
        out = []
        for k, crd in self.data["objects"].items():
            if not k.startswith(_CRD_PREFIX):
                continue
            spec = crd.get("spec") or {}
            names = spec.get("names") or {}
            for ver in spec.get("versions") or []:
                if ver.get("served", True):
                    subs = tuple((ver.get("subresources") or {}).keys())
                    out.append(ResourceType(spec.get("group", ""), ver["name"], names.get("plural", ""),
                                            names.get("kind", ""), spec.get("scope") == "Namespaced",
                                            tuple(names.get("shortNames") or []), subs))
        return out

    def resolve_type(self, group: str, version: str, plural: str) -> ResourceType:
        rt = _BUILTIN_BY_PATH.get((group, version, plural))
        if rt is not None:
            return rt
        for rt in self.crd_types():
            if rt.group == group and rt.version == version and rt.plural == plural:
                return rt
        raise ApiError(404, "the server could not find the requested resource", reason="NotFound")

    def type_for(self, api_version: str, kind: str) -> ResourceType:
        group, _, version = api_version.rpartition("/")
        rt = _BUILTIN_BY_KIND.get((group, version, kind))
        if rt is not None:
            return rt
        for rt in self.crd_types():
            if rt.group == group and rt.version == version and rt.kind == kind:
                return rt
        raise ApiError(404, f"no matches for kind \"{kind}\" in version \"{api_version}\"", reason="NotFound")

    # ---- objects ----------------------------------------------------------------------------
    @staticmethod
    def key(group: str, plural: str, namespace: str | None, name: str) -> str:
        return f"{group}/{plural}/{namespace or ''}/{name}"

    def get_object(self, group: str, plural: str, namespace: str | None, name: str) -> dict | None:
        return self.data["objects"].get(self.key(group, plural, namespace, name))

    def list_objects(self, group: str, plural: str, namespace: str | None = None) -> list[dict]:
        prefix = f"{group}/{plural}/"
        out = []
        for k, obj in self.data["objects"].items():
            if k.startswith(prefix):
                if namespace is None or obj["metadata"].get("namespace") == namespace:
                    out.append(obj)
        return out

    def next_rv(self) -> str:
        self.data["rv"] += 1
        return str(self.data["rv"])

    def create(self, rt: ResourceType, obj: dict, namespace: str | None = None, dry_run: bool = False) -> dict:
        """Store a new object; with `dry_run` return what would be stored and store nothing."""
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        if not meta.get("name"):
            if meta.get("generateName"):
                meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
            else:
                raise ApiError(422, f"{rt.kind} \"\" is invalid: metadata.name: Required value",
                               reason="Invalid")
        if rt.namespaced:
            meta["namespace"] = namespace or meta.get("namespace") or "default"
        else:
            meta.pop("namespace", None)
        k = self.key(rt.group, rt.plural, meta.get("namespace"), meta["name"])
        if k in self.data["objects"]:
            raise ApiError(409, f'{rt.plural}{"." + rt.group if rt.group else ""} "{meta["name"]}" already exists',
                           reason="AlreadyExists")
        obj["apiVersion"] = rt.api_version
        obj["kind"] = rt.kind
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = self.sandbox.clock.rfc3339()
        meta["generation"] = 1
        if dry_run:
            meta.pop("resourceVersion", None)  # as the API server answers a dry-run create
            return obj
        meta["resourceVersion"] = self.next_rv()
        self.data["objects"][k] = obj
        self.sandbox.store.mark()
        self._changed("ADDED", rt, obj)
        return obj

    def replace(self, rt: ResourceType, obj: dict, check_rv: bool = True, dry_run: bool = False) -> dict:
        """Store `obj` over the existing object; a stale resourceVersion is a 409 Conflict.

        With `dry_run`, return what would be stored (keeping the current resourceVersion) and
        store nothing.
        """
        meta = obj.setdefault("metadata", {})
        k = self.key(rt.group, rt.plural, meta.get("namespace") if rt.namespaced else None, meta["name"])
        current = self.data["objects"].get(k)
        if current is None:
            raise ApiError(404, f'{rt.plural} "{meta["name"]}" not found', reason="NotFound")
        cur_meta = current["metadata"]
        sent_rv = meta.get("resourceVersion")
        if check_rv and sent_rv and sent_rv != cur_meta["resourceVersion"]:
            raise ApiError(409, f'Operation cannot be fulfilled on {rt.plural} "{meta["name"]}": the object '
                                f"has been modified; please apply your changes to the latest version and try again",
                           reason="Conflict")
        obj = copy.deepcopy(obj)
        obj["apiVersion"], obj["kind"] = rt.api_version, rt.kind
        for f in ("uid", "creationTimestamp"):
            obj["metadata"][f] = cur_meta[f]
        if rt.namespaced:
            obj["metadata"]["namespace"] = cur_meta["namespace"]
        gen = cur_meta.get("generation", 1)
        if obj.get("spec") != current.get("spec"):
            gen += 1
        obj["metadata"]["generation"] = gen
        if {**obj, "metadata": {**obj["metadata"], "resourceVersion": cur_meta["resourceVersion"]}} == current:
            return current  # nothing changed: a no-op write keeps its resourceVersion, as the API server does
        if dry_run:
            obj["metadata"]["resourceVersion"] = cur_meta["resourceVersion"]
            return obj
        obj["metadata"]["resourceVersion"] = self.next_rv()
        self.data["objects"][k] = obj
        self.sandbox.store.mark()
        self._changed("MODIFIED", rt, obj)
        return obj

    def delete(self, rt: ResourceType, namespace: str | None, name: str) -> dict:
        k = self.key(rt.group, rt.plural, namespace if rt.namespaced else None, name)
        obj = self.data["objects"].pop(k, None)
        if obj is None:
            raise ApiError(404, f'{rt.plural} "{name}" not found', reason="NotFound")
        self.sandbox.store.mark()
        self.delete_logged(rt.group, rt.plural, obj)
        return obj

    def delete_logged(self, group: str, plural: str, obj: dict) -> None:
        """Tell watchers that `obj` (already removed) is gone, at the resourceVersion of its deletion."""
        gone = {**obj, "metadata": {**obj["metadata"], "resourceVersion": self.next_rv()}}
        self.sandbox.kube_changes(self.cluster_id).record("DELETED", group, plural, gone)

    def _changed(self, event: str, rt: ResourceType, obj: dict) -> None:
        self.sandbox.kube_changes(self.cluster_id).record(event, rt.group, rt.plural, obj)

    # ---- helpers for simulated controllers -------------------------------------------------------
    def put(self, obj: dict) -> dict:
        """Create or replace by apiVersion/kind/name, as a controller would (no rv check)."""
        rt = self.type_for(obj["apiVersion"], obj["kind"])
        meta = obj["metadata"]
        existing = self.get_object(rt.group, rt.plural, meta.get("namespace") if rt.namespaced else None,
                                   meta["name"])
        if existing is None:
            return self.create(rt, obj, meta.get("namespace"))
        return self.replace(rt, obj, check_rv=False)

    def find(self, api_version: str, kind: str, namespace: str | None = None) -> list[dict]:
        rt = self.type_for(api_version, kind)
        return self.list_objects(rt.group, rt.plural, namespace)

    def remove(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> None:
        rt = self.type_for(api_version, kind)
        self.delete(rt, namespace, name)

    def all_objects(self) -> Iterable[dict]:
        return list(self.data["objects"].values())
