"""The Kubernetes API's meta endpoints: `/version`, health, discovery and skeleton OpenAPI v3.

Discovery is always in the plain form: the aggregated-discovery Accept header is answered with
`application/json`, which client-go takes as "fall back to the legacy documents". `/openapi/v3`
serves skeleton documents (operations and their parameters, no schemas): enough for kubectl to see
that the server validates fields itself, so `kubectl apply` and `create` work without
`--validate=false`.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import TYPE_CHECKING

from ..core import ApiError
from ..stores.kube import ResourceType
from ..wire.http import Request, Response
from ..wire.kube import json_response
from .kube_writes import cluster_store

if TYPE_CHECKING:
    from ..core import SandboxContext as Sandbox


# What `/version` answers unless a cluster's store sets `meta["gitVersion"]` (GKE-style versions).
DEFAULT_GIT_VERSION = "v1.33.5"

VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]

SUBRESOURCE_VERBS = {"status": ["get", "patch", "update"], "log": ["get"], "scale": ["get", "patch", "update"]}


def version(sb: "Sandbox", req: Request):
    store = cluster_store(sb, req)
    git_version = store.data["meta"].get("gitVersion") or DEFAULT_GIT_VERSION
    m = re.match(r"v(\d+)\.(\d+)", git_version)
    major, minor = (m.group(1), m.group(2)) if m else ("1", "33")
    # A vendor build (GKE's "-gke.N") marks its minor version with "+", as Kubernetes' build script does.
    shown = minor + "+" if "-gke." in git_version else minor
    return json_response({
        "major": major, "minor": shown, "emulationMajor": major, "emulationMinor": minor,
        "minCompatibilityMajor": major, "minCompatibilityMinor": str(max(int(minor) - 1, 0)),
        "gitVersion": git_version, "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean", "buildDate": "2025-09-09T00:00:00Z", "goVersion": "go1.24.6",
        "compiler": "gc", "platform": "linux/amd64",
    })


# The checks kube-apiserver lists with ?verbose (https://kubernetes.io/docs/reference/using-api/health-checks/).
HEALTH_CHECKS = {
    "livez": ("ping", "log", "etcd", "poststarthook/start-apiextensions-controllers",
              "poststarthook/crd-informer-synced", "poststarthook/generic-apiserver-start-informers"),
    "readyz": ("ping", "log", "etcd", "etcd-readiness", "informer-sync", "poststarthook/start-apiextensions-controllers",
               "poststarthook/crd-informer-synced", "poststarthook/generic-apiserver-start-informers", "shutdown"),
    "healthz": ("ping", "log", "etcd", "poststarthook/start-apiextensions-controllers",
                "poststarthook/crd-informer-synced"),
}


def health(sb: "Sandbox", req: Request):
    """`ok`, or with `?verbose` one `[+]<check> ok` line per check and `<endpoint> check passed`."""
    cluster_store(sb, req)
    endpoint, _, check = req.path.strip("/").partition("/")
    checks = HEALTH_CHECKS[endpoint]
    if check and check not in checks:
        return Response(404, "404 page not found\n", "text/plain; charset=utf-8")
    if "verbose" not in req.params or check:
        return Response(200, "ok", "text/plain; charset=utf-8")
    excluded = set(req.params.get("exclude") or [])
    lines = [f"[+]{c} excluded: ok" if c in excluded else f"[+]{c} ok" for c in checks]
    return Response(200, "\n".join(lines) + f"\n{endpoint} check passed\n", "text/plain; charset=utf-8")


def root_paths(sb: "Sandbox", req: Request):
    store = cluster_store(sb, req)
    paths = ["/api", "/api/v1", "/apis", "/healthz", "/livez", "/openapi/v3", "/readyz", "/version"]
    for group, versions in _groups(store.types()).items():
        paths.append(f"/apis/{group}")
        paths.extend(f"/apis/{group}/{v}" for v in versions)
    return json_response({"paths": sorted(paths)})


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
                 "verbs": list(rt.verbs) or VERBS}
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
    cluster_store(sb, req)
    host = req.headers.get("Host") or "127.0.0.1"
    return json_response({"kind": "APIVersions", "versions": ["v1"],
                  "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": host}]})


def core_resources(sb: "Sandbox", req: Request):
    store = cluster_store(sb, req)
    return json_response(_resource_list(store.types(), "", "v1"))


def api_groups(sb: "Sandbox", req: Request):
    store = cluster_store(sb, req)
    groups = [_api_group(g, vs) for g, vs in _groups(store.types()).items()]
    return json_response({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})


def api_group(sb: "Sandbox", req: Request):
    store = cluster_store(sb, req)
    group = req.match["group"]
    versions = _groups(store.types()).get(group)
    if not versions:
        raise ApiError(404, "the server could not find the requested resource", reason="NotFound")
    return json_response({"kind": "APIGroup", "apiVersion": "v1", **_api_group(group, versions)})


def group_resources(sb: "Sandbox", req: Request):
    store = cluster_store(sb, req)
    group, version = req.match["group"], req.match["version"]
    types = store.types()
    if not any(rt.group == group and rt.version == version for rt in types):
        raise ApiError(404, "the server could not find the requested resource", reason="NotFound")
    return json_response(_resource_list(types, group, version))


def _gv_path(group: str, version: str) -> str:
    return f"apis/{group}/{version}" if group else f"api/{version}"


def openapi_root(sb: "Sandbox", req: Request):
    """OpenAPI v3 discovery: one document per group-version (kubectl's validation reads them)."""
    store = cluster_store(sb, req)
    types = store.types()
    gvs = sorted({(rt.group, rt.version) for rt in types})
    paths = {}
    for group, version in gvs:
        digest = hashlib.sha256(json.dumps(_resource_list(types, group, version), sort_keys=True).encode())
        paths[_gv_path(group, version)] = {
            "serverRelativeURL": f"/openapi/v3/{_gv_path(group, version)}?hash={digest.hexdigest()[:32].upper()}"}
    return json_response({"paths": paths})


def openapi_group_version(sb: "Sandbox", req: Request):
    """A skeleton OpenAPI v3 document: the operations and parameters of each resource, no schemas.

    It is what `kubectl apply`/`create` need to see that the server validates fields itself
    (`fieldValidation` on PATCH); kubectl then skips its client-side schema validation.
    """
    store = cluster_store(sb, req)
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
    return json_response({"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": DEFAULT_GIT_VERSION},
                  "paths": paths, "components": {"schemas": {}}})
