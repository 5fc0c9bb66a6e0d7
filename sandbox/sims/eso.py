"""Simulated External Secrets Operator (external-secrets.io/v1), once its CRDs exist.

Stands in for ESO's controllers: ClusterSecretStores / SecretStores are validated, and each
ExternalSecret materialises its target Secret from the sandbox's fake Secret Manager (provider
`gcpsm`) or, for any other provider, from a fake backend whose values the admin API sets
(`PUT /sandbox/backends/{cluster}`). Values are never printed: conditions, events and admin answers
name keys only.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from typing import TYPE_CHECKING, Any

from ..core import ApiError
from ..wire.http import Request, Route
from ..stores import gke, iam, projects, secrets
from ..stores.kube import KubeStore, RT_CLUSTERSECRETSTORE, RT_EXTERNALSECRET, RT_SECRET, RT_SECRETSTORE
from .util import (condition, has_crd, kube_clusters, owner_ref, record_event, resolve_cluster, write_fields,
                   write_meta, write_status)

if TYPE_CHECKING:
    from ..core import SandboxContext as Sandbox

ES_CRD = "externalsecrets.external-secrets.io"
MANAGED_LABEL = "reconcile.external-secrets.io/managed"
DATA_HASH_ANNOTATION = "reconcile.external-secrets.io/data-hash"


class _Missing(Exception):
    """A remote key (or a property of it) the provider does not have."""


def _backend_values(sb: "Sandbox", cluster_id: str) -> dict[str, str]:
    return ((sb.store.data.get("backends") or {}).get(cluster_id) or {}).get("values") or {}


def _provider(store: dict) -> tuple[str | None, dict]:
    provider = (store.get("spec") or {}).get("provider") or {}
    for name, block in provider.items():
        if block:
            return name, block
    return None, {}


ESO_KSA = ("external-secrets", "external-secrets")  # the chart's own ServiceAccount (namespace, name)
GSA_ANNOTATION = "iam.gke.io/gcp-service-account"
SECRET_READERS = ("roles/secretmanager.secretAccessor", "roles/secretmanager.admin", "roles/owner", "roles/editor")


def _workload_identity(sb: "Sandbox", kube: KubeStore, store: dict, block: dict) -> str | None:
    """What stops ESO's keyless (Workload Identity) access to Secret Manager, or None when the chain
    is complete: a GKE cluster with a workload pool, the Kubernetes service account annotated with a
    Google service account, that account existing, `roles/iam.workloadIdentityUser` on it for
    `serviceAccount:<pool>[ns/name]`, and a Secret Manager read role for it on the project
    (https://cloud.google.com/kubernetes-engine/docs/how-to/workload-identity)."""
    key = gke.cluster_for_kube(sb, kube.cluster_id)
    pool = ((gke.state(sb)["clusters"].get(key) or {}).get("workloadIdentityConfig") or {}).get("workloadPool")
    if not pool:
        return ("gcpsm workload identity needs a GKE cluster with Workload Identity (a workload pool); off GKE use "
                "auth.secretRef with a service-account key")
    ref = ((block.get("auth") or {}).get("workloadIdentity") or {}).get("serviceAccountRef") or {}
    ns, name = ref.get("namespace") or ESO_KSA[0], ref.get("name") or ESO_KSA[1]
    ksa = kube.get_object("", "serviceaccounts", ns, name)
    if ksa is None:
        return f"ServiceAccount {ns}/{name} not found"
    gsa = ((ksa["metadata"].get("annotations") or {}).get(GSA_ANNOTATION) or "").strip()
    if not gsa:
        return f"ServiceAccount {ns}/{name} has no {GSA_ANNOTATION} annotation"
    account = iam.find_account(sb, "-", gsa)
    if account is None:
        return f"Google service account {gsa} does not exist"
    member = f"serviceAccount:{pool}[{ns}/{name}]"
    if "roles/iam.workloadIdentityUser" not in iam.member_roles(sb, account["name"], member):
        return f"{gsa} does not let {member} act as it: roles/iam.workloadIdentityUser is missing"
    project = projects.project_record(sb, block["projectID"])["id"]
    if not iam.member_roles(sb, f"projects/{project}", f"serviceAccount:{gsa}") & set(SECRET_READERS):
        return f"{gsa} has no roles/secretmanager.secretAccessor in project {project}"
    return None


def _store_state(sb: "Sandbox", kube: KubeStore, store: dict) -> tuple[bool, str, str]:
    """(ready, reason, message) as ESO's store controller reports it."""
    name, block = _provider(store)
    if name is None:
        return False, "InvalidProviderConfig", "invalid store provider config: spec.provider has no provider configured"
    if name == "gcpsm":
        if not block.get("projectID"):
            return False, "InvalidProviderConfig", "invalid store provider config: gcpsm.projectID is required"
        ref = ((block.get("auth") or {}).get("secretRef") or {}).get("secretAccessKeySecretRef")
        if ref:
            ns = ref.get("namespace") or store["metadata"].get("namespace")
            secret = kube.get_object("", "secrets", ns, ref.get("name") or "")
            if secret is None or ref.get("key") not in (secret.get("data") or {}) | (secret.get("stringData") or {}):
                return (False, "InvalidProviderConfig",
                        f'cannot get Kubernetes secret "{ref.get("name")}" key "{ref.get("key")}" in namespace '
                        f'"{ns}" for gcpsm auth.secretRef')
        else:
            problem = _workload_identity(sb, kube, store, block)
            if problem:
                return False, "ValidationFailed", f"unable to validate store: {problem}"
    return True, "Valid", "store validated"


def _fetch(sb: "Sandbox", kube: KubeStore, store: dict, key: str) -> bytes:

    name, block = _provider(store)
    if name == "gcpsm":
        value = secrets.access_latest(sb, block["projectID"], key)
    else:
        raw = _backend_values(sb, kube.cluster_id).get(key)
        value = None if raw is None else (raw.encode() if isinstance(raw, str) else json.dumps(raw).encode())
    if value is None:
        raise _Missing(key)
    return value


def _property(value: bytes, key: str, prop: str | None) -> bytes:
    if not prop:
        return value
    try:
        doc: Any = json.loads(value)
    except ValueError:
        raise _Missing(f"{key} (property {prop}: value is not JSON)") from None
    for part in prop.split("."):
        if not isinstance(doc, dict) or part not in doc:
            raise _Missing(f"{key} (property {prop})")
        doc = doc[part]
    return (doc if isinstance(doc, str) else json.dumps(doc)).encode()


def _extract(value: bytes, key: str) -> dict[str, bytes]:
    try:
        doc = json.loads(value)
    except ValueError:
        raise _Missing(f"{key} (dataFrom.extract: value is not a JSON object)") from None
    if not isinstance(doc, dict):
        raise _Missing(f"{key} (dataFrom.extract: value is not a JSON object)")
    return {k: (v if isinstance(v, str) else json.dumps(v)).encode() for k, v in doc.items()}


def _find(sb: "Sandbox", kube: KubeStore, store: dict, spec: dict) -> dict[str, bytes]:
    """dataFrom.find by name regexp (tags and paths are not simulated)."""

    name, block = _provider(store)
    pattern = ((spec.get("name") or {}).get("regexp")) or ".*"
    try:
        rx = re.compile(pattern)
    except re.error:
        raise _Missing(f"find: invalid name regexp {pattern!r}") from None
    keys = (secrets.secret_ids(sb, block["projectID"]) if name == "gcpsm"
            else sorted(_backend_values(sb, kube.cluster_id)))
    out = {}
    for k in keys:
        if rx.search(k):
            try:
                out[k] = _fetch(sb, kube, store, k)
            except _Missing:
                continue  # a secret without an enabled version is skipped by find, as ESO does
    return out


def _gather(sb: "Sandbox", kube: KubeStore, store: dict, spec: dict) -> tuple[dict[str, bytes], list[str]]:
    data: dict[str, bytes] = {}
    missing: list[str] = []
    for item in spec.get("dataFrom") or []:
        try:
            if item.get("extract"):
                ex = item["extract"]
                data.update(_extract(_fetch(sb, kube, store, ex.get("key", "")), ex.get("key", "")))
            elif item.get("find"):
                data.update(_find(sb, kube, store, item["find"]))
        except _Missing as exc:
            missing.append(str(exc))
    for item in spec.get("data") or []:
        ref = item.get("remoteRef") or {}
        key = ref.get("key", "")
        try:
            data[item.get("secretKey") or key] = _property(_fetch(sb, kube, store, key), key, ref.get("property"))
        except _Missing as exc:
            missing.append(str(exc))
    return data, missing


def _lookup_store(kube: KubeStore, es: dict) -> tuple[dict | None, str]:
    ref = (es.get("spec") or {}).get("secretStoreRef") or {}
    kind = ref.get("kind") or "SecretStore"
    name = ref.get("name") or ""
    if kind == "ClusterSecretStore":
        return kube.get_object("external-secrets.io", "clustersecretstores", None, name), f'ClusterSecretStore "{name}"'
    return (kube.get_object("external-secrets.io", "secretstores", es["metadata"].get("namespace"), name),
            f'SecretStore "{name}"')


def external_secrets_operator(sb: "Sandbox") -> None:
    """Simulation of External Secrets Operator: validates stores and syncs ExternalSecrets."""
    for kube in kube_clusters(sb):
        if not has_crd(kube, ES_CRD):
            continue
        now = sb.clock.rfc3339()
        for rt in (RT_CLUSTERSECRETSTORE, RT_SECRETSTORE):
            for store in kube.list_objects(rt.group, rt.plural):
                ready, reason, msg = _store_state(sb, kube, store)
                prev = (store.get("status") or {}).get("conditions")
                write_status(kube, rt, store, {"conditions": [condition("Ready", ready, reason, msg, now, prev)],
                                               "capabilities": "ReadWrite"})
        for es in kube.list_objects("external-secrets.io", "externalsecrets"):
            _sync(sb, kube, es, now)


def _sync(sb: "Sandbox", kube: KubeStore, es: dict, now: str) -> None:
    spec = es.get("spec") or {}
    meta = es["metadata"]
    ns = meta.get("namespace") or "default"
    target = spec.get("target") or {}
    target_name = target.get("name") or meta["name"]
    prev_status = es.get("status") or {}
    prev = prev_status.get("conditions")
    store, store_desc = _lookup_store(kube, es)
    error = None
    data: dict[str, bytes] = {}
    if store is None:
        error = f"could not get {store_desc}: not found"
    else:
        ready, _, _ = _store_state(sb, kube, store)
        if not ready:
            error = f"{store_desc} is not ready"
        else:
            data, missing = _gather(sb, kube, store, spec)
            if missing:
                error = ("could not get secret data from provider: key(s) not found in "
                         f"{store_desc}: {', '.join(missing)}")
    if error is not None:
        cond = condition("Ready", False, "SecretSyncedError", error, now, prev)
        status = {**prev_status, "conditions": [cond]}
        if status != prev_status:
            record_event(sb, kube, es, "UpdateFailed", error, "Warning", "external-secrets")
            write_status(kube, RT_EXTERNALSECRET, es, status)
        return
    digest = hashlib.sha256(json.dumps({k: base64.b64encode(v).decode() for k, v in sorted(data.items())})
                            .encode()).hexdigest()[:32]
    policy = target.get("creationPolicy") or "Owner"
    if policy != "None":
        _write_secret(kube, es, ns, target_name, target, policy, data, digest)
    cond = condition("Ready", True, "SecretSynced", "secret synced", now, prev)
    synced = f"{meta.get('generation', 1)}-{digest[:8]}"
    # The refresh time moves only when something was synced, so an unchanged ExternalSecret is not rewritten.
    unchanged = prev_status.get("syncedResourceVersion") == synced and prev_status.get("refreshTime")
    status = {"conditions": [cond], "refreshTime": prev_status["refreshTime"] if unchanged else now,
              "binding": {"name": target_name}, "syncedResourceVersion": synced}
    write_status(kube, RT_EXTERNALSECRET, es, status)


def _write_secret(kube: KubeStore, es: dict, ns: str, name: str, target: dict, policy: str,
                  data: dict[str, bytes], digest: str) -> None:
    encoded = {k: base64.b64encode(v).decode() for k, v in data.items()}
    template = target.get("template") or {}
    tmeta = template.get("metadata") or {}
    labels = {**(tmeta.get("labels") or {}), MANAGED_LABEL: "true"}
    annotations = {**(tmeta.get("annotations") or {}), DATA_HASH_ANNOTATION: digest}
    cur = kube.get_object("", "secrets", ns, name)
    if cur is None:
        if policy == "Merge":
            return  # Merge never creates: ESO reports it and waits for the Secret to exist
        secret = {"metadata": {"name": name, "namespace": ns, "labels": labels, "annotations": annotations},
                  "type": template.get("type") or "Opaque", "data": encoded}
        if policy == "Owner":
            secret["metadata"]["ownerReferences"] = [owner_ref(es)]
        kube.create(RT_SECRET, secret, ns)
        return
    if policy == "Merge":
        encoded = {**(cur.get("data") or {}), **encoded}
    cur = write_meta(kube, RT_SECRET, cur, labels=labels, annotations=annotations)
    write_fields(kube, RT_SECRET, cur, data=encoded)


# ---- admin ---------------------------------------------------------------------------------------------
def put_backend(sb: "Sandbox", req: Request):
    """`{values: {key: value}, merge?}`: the fake external secret backend ESO reads for stores whose
    provider is not gcpsm. The answer lists keys only, never values."""
    cid = resolve_cluster(sb, req.match["cluster"])
    body = req.json()
    values = body.get("values")
    if not isinstance(values, dict):
        raise ApiError(400, "backends needs an object `values` of key -> value")
    backends = sb.store.section("backends")
    entry = backends.setdefault(cid, {"values": {}})
    entry["values"] = {**entry.get("values", {}), **values} if body.get("merge") else dict(values)
    entry["values"] = {k: v for k, v in entry["values"].items() if v is not None}
    sb.store.mark()
    return {"cluster": cid, "keys": sorted(entry["values"])}


def get_backend(sb: "Sandbox", req: Request):
    cid = resolve_cluster(sb, req.match["cluster"])
    return {"cluster": cid, "keys": sorted(_backend_values(sb, cid))}


ADMIN_ROUTES = [
    Route("PUT", r"/sandbox/backends/(?P<cluster>[^/]+)", put_backend, "sim.backends.put"),
    Route("GET", r"/sandbox/backends/(?P<cluster>[^/]+)", get_backend, "sim.backends.get"),
]
