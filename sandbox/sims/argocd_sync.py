"""Simulation of Argo CD syncing the directory sources it can read (app-of-apps included).

For every Application source that is a path in a repository the simulated git server serves
(`sims/git.py`), the objects that path yields are applied to the cluster the way an automated sync
leaves them: created or brought to git's fields, tracked by the `argocd.argoproj.io/tracking-id`
annotation (Argo CD 3's default tracking method, `<app>:<group>/<kind>:<namespace>/<name>`), and with
`prune`, tracked objects no longer in git are deleted. An Application without `syncPolicy.automated`
is never synced (it stays OutOfSync, health Missing: the seed's "manual-sync = dormant"). Objects
whose type the cluster does not serve yet wait for a later pass, as Argo CD retries, and keep the
Application OutOfSync meanwhile. Helm charts are not rendered: a chart source counts as synced.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

from ..core import ApiError
from ..stores.kube import KubeStore
from . import git
from .util import ensure, has_crd, kube_clusters, sim_meta

if TYPE_CHECKING:
    from ..core import SandboxContext as Sandbox

TRACKING = "argocd.argoproj.io/tracking-id"
APP_CRD = "applications.argoproj.io"


def sync_state(kube: KubeStore, namespace: str, name: str) -> dict:
    """What the last pass found for one Application: `pending` (kinds not served yet), `problems`."""
    return (sim_meta(kube, "argocd-sync").get("apps") or {}).get(f"{namespace}/{name}") or {}


def is_automated(app: dict) -> bool:
    return bool(((app.get("spec") or {}).get("syncPolicy") or {}).get("automated") is not None)


def argocd_directory_sync(sb: "Sandbox") -> None:
    for kube in kube_clusters(sb):
        if not has_crd(kube, APP_CRD) or not (sb.store.data.get("git") or {}):
            continue
        states: dict[str, dict] = {}
        for app in list(kube.list_objects("argoproj.io", "applications")):
            meta = app["metadata"]
            key = f"{meta.get('namespace')}/{meta['name']}"
            if not is_automated(app):
                continue
            state = _sync_app(sb, kube, app)
            if state:
                states[key] = state
        meta = sim_meta(kube, "argocd-sync")
        if meta.get("apps", {}) != states:
            meta["apps"] = states
            sb.store.mark()


def _sync_app(sb: "Sandbox", kube: KubeStore, app: dict) -> dict:
    spec = app.get("spec") or {}
    sources = spec.get("sources") or ([spec["source"]] if spec.get("source") else [])
    dest_ns = (spec.get("destination") or {}).get("namespace") or "default"
    name = app["metadata"]["name"]
    pending: list[str] = []
    problems: list[str] = []
    wanted: set[str] = set()
    read_any = False
    for src in sources:
        if not src.get("path"):
            continue
        objs = git.manifests(sb, src.get("repoURL", ""), src["path"], bool((src.get("directory") or {}).get("recurse")),
                             problems)
        if objs is None:
            continue
        read_any = True
        for obj in objs:
            try:
                rt = kube.type_for(obj["apiVersion"], obj["kind"])
            except ApiError:
                pending.append(f"{obj['kind']} ({obj['apiVersion']})")
                continue
            obj = copy.deepcopy(obj)
            meta = obj.setdefault("metadata", {})
            ns = (meta.get("namespace") or dest_ns) if rt.namespaced else None
            if ns:
                meta["namespace"] = ns
            tracking = f"{name}:{rt.group}/{rt.kind}:{ns or ''}/{meta.get('name', '')}"
            meta.setdefault("annotations", {})[TRACKING] = tracking
            wanted.add(tracking)
            ensure(kube, rt, obj)
    if read_any and ((spec.get("syncPolicy") or {}).get("automated") or {}).get("prune"):
        _prune(kube, name, wanted)
    return {k: v for k, v in (("pending", sorted(set(pending))), ("problems", problems)) if v}


def _prune(kube: KubeStore, app_name: str, wanted: set[str]) -> None:
    for obj in list(kube.all_objects()):
        tracking = ((obj.get("metadata") or {}).get("annotations") or {}).get(TRACKING) or ""
        if tracking.startswith(f"{app_name}:") and tracking not in wanted:
            try:
                rt = kube.type_for(obj["apiVersion"], obj["kind"])
            except ApiError:
                continue
            kube.delete(rt, obj["metadata"].get("namespace") if rt.namespaced else None, obj["metadata"]["name"])
