"""Simulated Argo CD: Application status and the ApplicationSet controller (its install is in
`argocd_install`, its directory syncs in `argocd_sync`).

None of this runs Argo CD. It reproduces what gpuplat and the seed's scripts observe of a working
Argo CD so the production code path (bootstrap, apply the AppProject and ApplicationSets, wait for
the automated Applications to be Synced and Healthy) is exercised end to end.
"""

from __future__ import annotations

import copy
import hashlib
import re
from typing import TYPE_CHECKING, Any

import yaml

from ..core import ApiError
from ..wire.http import Request, Route
from ..stores.kube import KubeStore, RT_APPLICATION, RT_APPLICATIONSET, RT_DEPLOYMENT, RT_SERVICEACCOUNT
from . import git
from .argocd_sync import is_automated, sync_state
from .util import (condition, crd, ensure, ensure_crd, ensure_namespace, has_crd, helm_workload, kube_clusters, match_selector,
                   owner_ref, resolve_cluster, scan, sim_meta, write_fields, write_meta, write_status)

if TYPE_CHECKING:
    from ..core import SandboxContext as Sandbox

ARGOCD_NS = "argocd"
BOOTSTRAP_LABEL = ("app.kubernetes.io/name", "argocd-bootstrap")
CHART_VERSION_ANNOTATION = "gpuplat.io/chart-version"
LAYER_LABEL = "gpuplat.io/layer"
APP_CRD = "applications.argoproj.io"

def _column(name: str, path: str, priority: int = 0) -> dict:
    column = {"name": name, "type": "string", "jsonPath": path}
    return {**column, "priority": priority} if priority else column


# The printer columns of the projects' own CRDs (argo-cd's manifests/crds/application-crd.yaml,
# external-secrets' config/crds/bases), so `kubectl get applications` reads SYNC STATUS, HEALTH STATUS.
READY = '.status.conditions[?(@.type=="Ready")]'
ARGO_CRDS = (
    crd("argoproj.io", "v1alpha1", "applications", "Application", True, ("app", "apps"),
        status_subresource=False, categories=("argo",),
        columns=(_column("Sync Status", ".status.sync.status"), _column("Health Status", ".status.health.status"),
                 _column("Revision", ".status.sync.revision", 10), _column("Project", ".spec.project", 10))),
    crd("argoproj.io", "v1alpha1", "applicationsets", "ApplicationSet", True, ("appset", "appsets"),
        categories=("argo",)),
    crd("argoproj.io", "v1alpha1", "appprojects", "AppProject", True, ("appproj", "appprojs"),
        status_subresource=False, categories=("argo",)),
)

ESO_CRDS = (
    crd("external-secrets.io", "v1", "externalsecrets", "ExternalSecret", True, ("es",),
        categories=("external-secrets",),
        columns=(_column("Store", ".spec.secretStoreRef.name"), _column("Refresh Interval", ".spec.refreshInterval"),
                 _column("Status", READY + ".reason"), _column("Ready", READY + ".status"))),
    crd("external-secrets.io", "v1", "clustersecretstores", "ClusterSecretStore", False, ("css",),
        categories=("external-secrets",),
        columns=({"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                 _column("Status", READY + ".reason"), _column("Ready", READY + ".status"))),
    crd("external-secrets.io", "v1", "secretstores", "SecretStore", True, ("ss",), categories=("external-secrets",)),
)

# What the sandbox's ApplicationSet controller reads when no groups were set for a cluster: a
# stand-in for the fork's clusters/<name>/groups.generated.yaml (the sandbox has no git server).
DEFAULT_GROUPS = (
    {"name": "argocd", "layer": "platform", "enabled": "true", "catalogPath": "catalog/platform/argocd"},
    {"name": "external-secrets", "layer": "platform", "enabled": "true",
     "catalogPath": "catalog/platform/external-secrets"},
    {"name": "cert-manager", "layer": "platform", "enabled": "true", "catalogPath": "catalog/platform/cert-manager"},
    {"name": "monitoring", "layer": "platform", "enabled": "true", "catalogPath": "catalog/platform/monitoring"},
    {"name": "kserve", "layer": "serving", "enabled": "true", "catalogPath": "catalog/serving/kserve"},
    {"name": "vllm", "layer": "serving", "enabled": "true", "catalogPath": "catalog/serving/vllm"},
    {"name": "gateway", "layer": "routing", "enabled": "true", "catalogPath": "catalog/routing/gateway"},
    {"name": "litellm", "layer": "llm-gateway", "enabled": "true", "catalogPath": "catalog/llm-gateway/litellm"},
    {"name": "open-webui", "layer": "experience", "enabled": "true", "catalogPath": "catalog/experience/open-webui"},
    {"name": "demo-chat", "layer": "demos", "enabled": "true", "catalogPath": "catalog/demos/demo-chat"},
)

SYNC_STATES = ("Synced", "OutOfSync", "Unknown")
HEALTH_STATES = ("Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown")


# ---- Applications ----------------------------------------------------------------------------------
def _sources(app: dict) -> list[dict]:
    spec = app.get("spec") or {}
    if spec.get("sources"):
        return list(spec["sources"])
    return [spec["source"]] if spec.get("source") else []


def _revision(source: dict) -> str:
    if source.get("chart"):
        return str(source.get("targetRevision") or "")
    seed = "|".join(str(source.get(k) or "") for k in ("repoURL", "targetRevision", "path"))
    return hashlib.sha1(seed.encode()).hexdigest()


def _app_status(sb: "Sandbox", kube: KubeStore, app: dict, override: dict | None) -> dict:
    """The status the simulated Argo CD application controller reports; old timestamps are kept
    while nothing observable changes, so an unchanged Application is never rewritten."""
    spec = app.get("spec") or {}
    sources = _sources(app)
    revisions = [_revision(s) for s in sources]
    meta = app["metadata"]
    synced = sync_state(kube, meta.get("namespace") or ARGOCD_NS, meta["name"])
    if not is_automated(app):
        natural, why = ("OutOfSync", "Missing"), "manual sync: nothing synced it yet"
    elif synced.get("pending") or synced.get("problems"):
        natural = ("OutOfSync", "Progressing")
        why = "; ".join([*(f"the server could not find the requested resource: {k}" for k in synced.get("pending", [])),
                         *synced.get("problems", [])])
    else:
        natural, why = ("Synced", "Healthy"), ""
    if override and (override.get("sync") or override.get("health")):
        why = "simulated by a sandbox admin override"
    sync = (override or {}).get("sync") or natural[0]
    health = (override or {}).get("health") or natural[1]
    phase = "Succeeded" if sync == "Synced" else "Failed"
    compared: dict[str, Any] = {"destination": spec.get("destination") or {}}
    sync_block: dict[str, Any] = {"status": sync, "comparedTo": compared}
    if len(sources) > 1:
        compared["sources"] = sources
        sync_block["revisions"] = revisions
    else:
        compared["source"] = sources[0] if sources else {}
        sync_block["revision"] = revisions[0] if revisions else ""
    old = app.get("status") or {}
    old_core = (((old.get("sync") or {}).get("status"), (old.get("sync") or {}).get("comparedTo"),
                 (old.get("sync") or {}).get("revision"), (old.get("sync") or {}).get("revisions"),
                 (old.get("health") or {}).get("status"), (old.get("operationState") or {}).get("phase")))
    new_core = (sync, compared, sync_block.get("revision"), sync_block.get("revisions"), health, phase)
    if old_core == new_core:
        return old
    now = sb.clock.rfc3339()
    message = ("successfully synced (all tasks run)" if phase == "Succeeded" else
               f"one or more objects failed to apply ({why})")
    health_block = {"status": health, "lastTransitionTime": now}
    if health != "Healthy":
        health_block["message"] = why
    op_sync: dict[str, Any] = {"syncOptions": list((spec.get("syncPolicy") or {}).get("syncOptions") or [])}
    result: dict[str, Any] = {"resources": []}
    if len(sources) > 1:
        op_sync["revisions"] = revisions
        result.update(revisions=revisions, sources=sources)
    else:
        op_sync["revision"] = sync_block.get("revision", "")
        result.update(revision=sync_block.get("revision", ""), source=compared.get("source"))
    source_type = "Helm" if any(s.get("chart") or s.get("helm") for s in sources) else "Directory"
    return {
        "sync": sync_block, "health": health_block, "sourceType": source_type, "reconciledAt": now,
        "operationState": {"phase": phase, "message": message, "startedAt": now, "finishedAt": now,
                           "operation": {"sync": op_sync, "initiatedBy": {"automated": True},
                                         "retry": {"limit": 5}},
                           "syncResult": result},
        "summary": {},
    }


def argocd_applications(sb: "Sandbox") -> None:
    """Simulation of Argo CD's application controller: every automated Application whose sources
    synced is Synced and Healthy, a manual one OutOfSync/Missing (an admin override says otherwise).
    Once the Application that deploys External Secrets is Healthy (`group-external-secrets` of the
    default groups, or any Application of the `external-secrets` chart, as the seed's catalog has),
    the platform layer's External Secrets Operator is "installed" (its CRDs appear)."""
    for kube in kube_clusters(sb):
        if not has_crd(kube, APP_CRD):
            continue
        overrides = sim_meta(kube, "argocd").get("overrides") or {}
        eso_app = None
        for app in kube.list_objects("argoproj.io", "applications"):
            meta = app["metadata"]
            status = _app_status(sb, kube, app, overrides.get(f"{meta.get('namespace')}/{meta['name']}"))
            if status is not app.get("status"):
                app = write_status(kube, RT_APPLICATION, app, status)
            if _deploys_eso(app) and status["health"]["status"] == "Healthy":
                eso_app = app
        if eso_app is not None:
            _install_eso(sb, kube, eso_app)


def _deploys_eso(app: dict) -> bool:
    return app["metadata"]["name"] == "group-external-secrets" or any(
        s.get("chart") == "external-secrets" for s in _sources(app))


def helm_values(sb: "Sandbox", app: dict) -> dict:
    """The values a Helm source of `app` renders with: its `$ref/path` value files read from the
    simulated git server, then `helm.values` and `helm.valuesObject`, later ones winning."""
    sources = _sources(app)
    refs = {s["ref"]: s.get("repoURL", "") for s in sources if s.get("ref")}
    out: dict = {}
    for src in sources:
        helm = src.get("helm") or {}
        if not src.get("chart") or not helm:
            continue
        layers = []
        for vf in helm.get("valueFiles") or []:
            ref, _, path = str(vf).lstrip("$").partition("/")
            if str(vf).startswith("$") and ref in refs:
                layers.append(git.read_yaml(sb, refs[ref], path))
        if helm.get("values"):
            layers.append(yaml.safe_load(helm["values"]) if isinstance(helm["values"], str) else helm["values"])
        layers.append(helm.get("valuesObject"))
        for layer in layers:
            if isinstance(layer, dict):
                out = _merged(out, layer)
    return out


def _merged(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merged(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _install_eso(sb: "Sandbox", kube: KubeStore, app: dict) -> None:
    """What the external-secrets chart leaves: its CRDs and controllers, and its ServiceAccount with
    the annotations of the chart's values (`serviceAccount.annotations`: the Workload Identity link)."""
    ns = ((app.get("spec") or {}).get("destination") or {}).get("namespace") or "external-secrets"
    if not all(has_crd(kube, d["metadata"]["name"]) for d in ESO_CRDS):
        labels = {"app.kubernetes.io/name": "external-secrets", "app.kubernetes.io/managed-by": "Helm"}
        for definition in ESO_CRDS:
            ensure_crd(kube, definition, labels)
        ensure_namespace(kube, ns)
        for name in ("external-secrets", "external-secrets-webhook", "external-secrets-cert-controller"):
            if kube.get_object("apps", "deployments", ns, name) is None:
                kube.create(RT_DEPLOYMENT, helm_workload("Deployment", name, "external-secrets-2.6.0", "v2.6.0",
                                                         "external-secrets", ns, name,
                                                         "ghcr.io/external-secrets/external-secrets"), ns)
    account = helm_values(sb, app).get("serviceAccount") or {}
    if account.get("create", True):
        meta = {"name": account.get("name") or "external-secrets", "namespace": ns,
                "labels": {"app.kubernetes.io/name": "external-secrets", "app.kubernetes.io/managed-by": "Helm"}}
        if account.get("annotations"):
            meta["annotations"] = {str(k): str(v) for k, v in account["annotations"].items()}
        ensure(kube, RT_SERVICEACCOUNT, {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta})


# ---- the ApplicationSet controller ---------------------------------------------------------------------
_TEMPLATE_RE = re.compile(r"\{\{\s*\.?([A-Za-z0-9_.\-]+)\s*\}\}")


def _render(value: Any, params: dict[str, str]) -> Any:
    if isinstance(value, str):
        return _TEMPLATE_RE.sub(lambda m: params.get(m.group(1), m.group(0)), value)
    if isinstance(value, list):
        return [_render(v, params) for v in value]
    if isinstance(value, dict):
        return {k: _render(v, params) for k, v in value.items()}
    return value


def _flatten(prefix: str, value: Any, out: dict[str, str]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    elif isinstance(value, bool):
        out[prefix] = "true" if value else "false"
    elif value is not None:
        out[prefix] = str(value)


def _cluster_name_from_path(path: str) -> str | None:
    m = re.match(r"^clusters/([^/]+)/", path or "")
    return m.group(1) if m else None


def groups_for(sb: "Sandbox", cluster_id: str, file_path: str, repo_url: str = "") -> list[dict]:
    """The groups file the git generator reads: from the repository when the simulated git server
    serves it (`sims/git.py`); otherwise set through `PUT /sandbox/gitops`, else the default list."""
    if git.checkout(sb, repo_url) is not None:
        data = git.read_yaml(sb, repo_url, file_path)
        return [g for g in data if isinstance(g, dict)] if isinstance(data, list) else []
    gitops = sb.store.data.get("gitops") or {}
    for key in (cluster_id, _cluster_name_from_path(file_path)):
        if key and key in gitops:
            return list(gitops[key].get("groups") or [])
    return [dict(g) for g in DEFAULT_GROUPS]


def _layer_of(appset: dict, selector: dict | None) -> str | None:
    label = ((appset["metadata"].get("labels") or {}).get(LAYER_LABEL))
    if label:
        return label
    if selector:
        if "layer" in (selector.get("matchLabels") or {}):
            return str(selector["matchLabels"]["layer"])
        for expr in selector.get("matchExpressions") or []:
            if expr.get("key") == "layer" and expr.get("operator") == "In" and len(expr.get("values") or []) == 1:
                return str(expr["values"][0])
    return None


def _desired_apps(sb: "Sandbox", kube: KubeStore, appset: dict) -> list[dict]:
    spec = appset.get("spec") or {}
    template = spec.get("template") or {}
    out: dict[str, dict] = {}
    for gen in spec.get("generators") or []:
        git_gen = gen.get("git") or {}
        if not git_gen.get("files"):
            continue
        selector = gen.get("selector")
        layer = _layer_of(appset, selector)
        for file_ref in git_gen["files"]:
            path = file_ref.get("path") or ""
            directory = path.rsplit("/", 1)[0] if "/" in path else ""
            for group in groups_for(sb, kube.cluster_id, path, git_gen.get("repoURL", "")):
                labels: dict[str, str] = {}
                _flatten("", group, labels)
                if selector and not match_selector(selector, labels):
                    continue
                if not selector and labels.get("enabled") != "true":
                    continue
                if layer and labels.get("layer") != layer:
                    continue
                params = dict(labels)
                params.update({"path": directory, "path.path": directory,
                               "path.basename": directory.rsplit("/", 1)[-1],
                               "path.filename": path.rsplit("/", 1)[-1],
                               "path.basenameNormalized": re.sub(r"[^a-z0-9-]", "-",
                                                                 directory.rsplit("/", 1)[-1].lower())})
                rendered = _render(copy.deepcopy(template), params)
                meta = rendered.get("metadata") or {}
                name = meta.get("name") or ""
                if not name or "{{" in name:
                    name = f"group-{labels.get('name', '')}"
                app_meta: dict[str, Any] = {"name": name, "namespace": appset["metadata"].get("namespace") or ARGOCD_NS,
                                            "ownerReferences": [owner_ref(appset)]}
                for field in ("labels", "annotations", "finalizers"):
                    if meta.get(field):
                        app_meta[field] = meta[field]
                out[name] = {"apiVersion": "argoproj.io/v1alpha1", "kind": "Application", "metadata": app_meta,
                             "spec": rendered.get("spec") or {}}
    return list(out.values())


def argocd_applicationsets(sb: "Sandbox") -> None:
    """Simulation of Argo CD's ApplicationSet controller for git *files* generators. There is no git
    server in the sandbox: the file it stands in for (the fork's clusters/<name>/groups.generated.yaml)
    comes from `PUT /sandbox/gitops` or a default list of groups. It creates one Application per
    selected group (owned by the ApplicationSet), keeps their spec on the template, and deletes the
    ones no longer generated (policy `sync`)."""
    for kube in kube_clusters(sb):
        if not has_crd(kube, "applicationsets.argoproj.io"):
            continue
        objs = scan(kube, ("argoproj.io", "applicationsets"), ("argoproj.io", "applications"))
        appsets, apps = objs[("argoproj.io", "applicationsets")], objs[("argoproj.io", "applications")]
        # The garbage collector's share: Applications whose owning ApplicationSet is gone go too.
        live = {a["metadata"]["uid"] for a in appsets}
        for app in list(apps):
            owners = [r for r in app["metadata"].get("ownerReferences") or [] if r.get("kind") == "ApplicationSet"]
            if owners and not any(r.get("uid") in live for r in owners):
                kube.delete(RT_APPLICATION, app["metadata"].get("namespace"), app["metadata"]["name"])
                apps.remove(app)
        for appset in appsets:
            _reconcile_appset(sb, kube, appset, apps)


def _reconcile_appset(sb: "Sandbox", kube: KubeStore, appset: dict, apps: list[dict]) -> None:
    uid = appset["metadata"]["uid"]
    ns = appset["metadata"].get("namespace") or ARGOCD_NS
    owned = {a["metadata"]["name"]: a for a in apps
             if any(r.get("uid") == uid for r in a["metadata"].get("ownerReferences") or [])}
    desired = _desired_apps(sb, kube, appset)
    problems = []
    for app in desired:
        name = app["metadata"]["name"]
        cur = owned.pop(name, None)
        if cur is None:
            cur = kube.get_object("argoproj.io", "applications", ns, name)
            if cur is not None:  # exists but not ours: the real controller refuses to take it over
                problems.append(f'application "{name}" already exists and is not owned by this ApplicationSet')
                continue
            kube.create(RT_APPLICATION, app, ns)
            continue
        meta = app["metadata"]
        cur = write_meta(kube, RT_APPLICATION, cur, labels=meta.get("labels"), annotations=meta.get("annotations"))
        write_fields(kube, RT_APPLICATION, cur, spec=app["spec"])
    for stale in owned.values():
        kube.delete(RT_APPLICATION, ns, stale["metadata"]["name"])
    now = sb.clock.rfc3339()
    prev = (appset.get("status") or {}).get("conditions") or []
    ok = not problems
    msg = "All applications have been generated successfully" if ok else "; ".join(problems)
    conditions = [
        condition("ErrorOccurred", not ok, "ApplicationSetUpToDate" if ok else "ApplicationGenerationFromParamsError",
                  msg, now, prev),
        condition("ParametersGenerated", True, "ParametersGenerated",
                  "Successfully generated parameters for all Applications", now, prev),
        condition("ResourcesUpToDate", ok, "ApplicationSetUpToDate" if ok else "ApplicationGenerationFromParamsError",
                  msg, now, prev),
    ]
    resources = [{"apiVersion": "argoproj.io/v1alpha1", "kind": "Application", "name": a["metadata"]["name"],
                  "namespace": ns} for a in desired]
    write_status(kube, RT_APPLICATIONSET, appset, {"conditions": conditions, "resources": resources})


# ---- admin ---------------------------------------------------------------------------------------------
def put_gitops(sb: "Sandbox", req: Request):
    """`{cluster, groups: [{name, layer, enabled, catalogPath}] | null}`: the groups file the simulated
    ApplicationSet controller reads for that cluster (a sandbox cluster id, a GKE resource name, or
    the cluster name used in the fork's clusters/<name>/ path); null restores the default list."""
    body = req.json()
    cluster = body.get("cluster")
    key = resolve_cluster(sb, cluster, must_exist=False)
    groups = body.get("groups")
    gitops = sb.store.section("gitops")
    if groups is None:
        gitops.pop(key, None)
        sb.store.mark()
        return {"cluster": key, "groups": [dict(g) for g in DEFAULT_GROUPS], "default": True}
    if not isinstance(groups, list):
        raise ApiError(400, "`groups` must be a list of {name, layer, enabled, catalogPath}")
    clean = []
    for g in groups:
        if not isinstance(g, dict) or not g.get("name") or not g.get("layer"):
            raise ApiError(400, f"group {g!r} needs at least `name` and `layer`")
        entry = dict(g)
        enabled = entry.get("enabled", "true")
        entry["enabled"] = ("true" if enabled else "false") if isinstance(enabled, bool) else str(enabled)
        entry.setdefault("catalogPath", f"catalog/{entry['layer']}/{entry['name']}")
        clean.append(entry)
    gitops[key] = {"groups": clean}
    sb.store.mark()
    return {"cluster": key, "groups": clean, "default": False}


def get_gitops(sb: "Sandbox", req: Request):
    return {"clusters": sb.store.data.get("gitops") or {}, "default": [dict(g) for g in DEFAULT_GROUPS]}


def post_app_status(sb: "Sandbox", req: Request):
    """`{cluster, name, namespace?, sync?, health?}`: force an Application's sync/health status; a
    null value clears that override, an absent one keeps it."""
    body = req.json()
    cid = resolve_cluster(sb, body.get("cluster"))
    name = body.get("name")
    if not name:
        raise ApiError(400, "app-status needs the Application `name`")
    ns = body.get("namespace") or ARGOCD_NS
    kube = sb.kube(cid)
    overrides = sim_meta(kube, "argocd").setdefault("overrides", {})
    entry = dict(overrides.get(f"{ns}/{name}") or {})
    for field, allowed in (("sync", SYNC_STATES), ("health", HEALTH_STATES)):
        if field not in body:
            continue
        value = body[field]
        if value is None:
            entry.pop(field, None)
        elif value not in allowed:
            raise ApiError(400, f"{field} must be one of {', '.join(allowed)} or null, got {value!r}")
        else:
            entry[field] = value
    if entry:
        overrides[f"{ns}/{name}"] = entry
    else:
        overrides.pop(f"{ns}/{name}", None)
    sb.store.mark()
    argocd_applications(sb)
    return {"cluster": cid, "namespace": ns, "name": name, "override": entry}


ADMIN_ROUTES = [
    Route("PUT", r"/sandbox/gitops", put_gitops, "sim.gitops.put"),
    Route("GET", r"/sandbox/gitops", get_gitops, "sim.gitops.get"),
    Route("POST", r"/sandbox/argocd/app-status", post_app_status, "sim.argocd.appStatus"),
]
