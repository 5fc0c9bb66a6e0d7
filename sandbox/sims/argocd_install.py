"""Simulation of installing Argo CD with Helm: the in-cluster bootstrap Job gpuplat runs, and an admin
verb for `helm upgrade --install` run from a laptop (the seed's `bootstrap/install.sh`).

No helm runs. What an install leaves is what gpuplat and the seed's scripts observe: the Argo CD
CRDs; the chart's workloads named after the release as the argo-cd chart names them (its
`nameOverride` is `argocd`, so release `argo-cd` gives `argo-cd-argocd-server`, release `argocd`
gives `argocd-server`); and Helm's release record, a Secret `sh.helm.release.v1.<release>.v<N>` of
type `helm.sh/release.v1` labelled owner=helm, name, status, version, whose `release` field is
base64 of gzipped JSON with the chart's metadata and the user-supplied values (`config`), as
Helm 3's secrets storage driver writes it (helm/pkg/storage/driver/secrets.go, util.go).
"""

from __future__ import annotations

import base64
import copy
import gzip
import json
from typing import TYPE_CHECKING

import yaml

from ..core import ApiError
from ..stores.kube import KubeStore, RT_DEPLOYMENT, RT_JOB, RT_POD, RT_SECRET, RT_STATEFULSET
from ..wire.http import Request, Route
from .argocd import ARGO_CRDS, ARGOCD_NS
from .util import (ensure, ensure_crd, ensure_namespace, fits_node, helm_workload, image_id, kube_clusters, owner_ref,
                   resolve_cluster, short_hash, write_status)

if TYPE_CHECKING:
    from ..core import SandboxContext as Sandbox

BOOTSTRAP_LABEL = ("app.kubernetes.io/name", "argocd-bootstrap")
CHART_VERSION_ANNOTATION = "gpuplat.io/chart-version"
RELEASE_ANNOTATION = "gpuplat.io/release"
VALUES_KEY = "values.yaml"
# The argo-cd chart's appVersion per chart version the sandbox knows (argo-helm's Chart.yaml).
APP_VERSIONS = {"9.1.4": "v3.2.0", "9.5.21": "v3.2.6"}


def fullname(release: str) -> str:
    """The argo-cd chart's `argo-cd.fullname` with its default nameOverride `argocd`."""
    return release if "argocd" in release else f"{release}-argocd"


def encode_release(record: dict) -> str:
    """Helm's own encoding of a release (gzip, then base64); the API adds its own base64 on top."""
    return base64.b64encode(gzip.compress(json.dumps(record).encode())).decode()


def helm_install(sb: "Sandbox", kube: KubeStore, release: str, namespace: str, version: str, values: dict) -> int:
    """What `helm upgrade --install <release> argo/argo-cd --version <version> -f values` leaves;
    returns the release revision."""
    now = sb.clock.rfc3339()
    app_version = APP_VERSIONS.get(version, "v3.2.0")
    chart = f"argo-cd-{version}"
    ensure_namespace(kube, namespace)
    for definition in ARGO_CRDS:
        ensure_crd(kube, definition, {"app.kubernetes.io/part-of": "argocd", "app.kubernetes.io/managed-by": "Helm",
                                      "helm.sh/chart": chart})
    base = fullname(release)
    for component in ("server", "repo-server", "applicationset-controller", "redis"):
        ensure(kube, RT_DEPLOYMENT, helm_workload("Deployment", f"{base}-{component}", chart, app_version, release, namespace,
                                                  f"argocd-{component}", "quay.io/argoproj/argocd", "argocd"))
    ensure(kube, RT_STATEFULSET, helm_workload("StatefulSet", f"{base}-application-controller", chart, app_version,
                                               release, namespace, "argocd-application-controller",
                                               "quay.io/argoproj/argocd", "argocd"))
    records = [s for s in kube.list_objects("", "secrets", namespace)
               if (s["metadata"].get("labels") or {}).get("owner") == "helm"
               and s["metadata"]["labels"].get("name") == release]
    revision = 1 + max((int(s["metadata"]["labels"].get("version", 0)) for s in records), default=0)
    for old in records:
        if old["metadata"]["labels"].get("status") == "deployed":
            labels = {**old["metadata"]["labels"], "status": "superseded"}
            kube.replace(RT_SECRET, {**old, "metadata": {**old["metadata"], "labels": labels}}, check_rv=False)
    record = {"name": release, "namespace": namespace, "version": revision,
              "info": {"first_deployed": now, "last_deployed": now, "status": "deployed",
                       "description": "Install complete" if revision == 1 else "Upgrade complete"},
              "chart": {"metadata": {"name": "argo-cd", "version": version, "appVersion": app_version,
                                     "apiVersion": "v2"}},
              "config": copy.deepcopy(values), "manifest": "# (simulated by the gpuplat sandbox: no helm ran)\n"}
    kube.create(RT_SECRET, {
        "apiVersion": "v1", "kind": "Secret", "type": "helm.sh/release.v1",
        "metadata": {"name": f"sh.helm.release.v1.{release}.v{revision}", "namespace": namespace,
                     "labels": {"owner": "helm", "name": release, "status": "deployed", "version": str(revision),
                                "modifiedAt": str(int(sb.clock.now()))}},
        "data": {"release": base64.b64encode(encode_release(record).encode()).decode()}}, namespace)
    return revision


# ---- the bootstrap Job ------------------------------------------------------------------------------
def argocd_bootstrap_job(sb: "Sandbox") -> None:
    """Simulation of gpuplat's Argo CD bootstrap Job (a container that runs `helm upgrade --install
    <release> argo/argo-cd --version <chart> -f /values/values.yaml`): the install above, the Job
    complete, and a finished pod whose log reads as helm's."""
    for kube in kube_clusters(sb):
        for job in kube.list_objects("batch", "jobs"):
            meta = job["metadata"]
            if (meta.get("labels") or {}).get(BOOTSTRAP_LABEL[0]) != BOOTSTRAP_LABEL[1]:
                continue
            annotations = meta.get("annotations") or {}
            version = annotations.get(CHART_VERSION_ANNOTATION)
            status = job.get("status") or {}
            if not version or status.get("succeeded") or status.get("failed"):
                continue
            release = annotations.get(RELEASE_ANNOTATION) or "argocd"
            revision = helm_install(sb, kube, release, meta["namespace"], version, _job_values(kube, job))
            _finish(sb, kube, job, release, version, revision)


def _job_values(kube: KubeStore, job: dict) -> dict:
    """The values file the Job mounts from a ConfigMap (what `-f /values/values.yaml` reads)."""
    spec = ((job.get("spec") or {}).get("template") or {}).get("spec") or {}
    for vol in spec.get("volumes") or []:
        name = (vol.get("configMap") or {}).get("name")
        cm = kube.get_object("", "configmaps", job["metadata"]["namespace"], name) if name else None
        if cm is not None and VALUES_KEY in (cm.get("data") or {}):
            return yaml.safe_load(cm["data"][VALUES_KEY]) or {}
    return {}


def _finish(sb: "Sandbox", kube: KubeStore, job: dict, release: str, version: str, revision: int) -> None:
    now = sb.clock.rfc3339()
    ns = job["metadata"]["namespace"]
    pod_name = f"{job['metadata']['name']}-{short_hash(job['metadata']['uid'], n=5)}"
    if kube.get_object("", "pods", ns, pod_name) is None:
        template = copy.deepcopy(((job.get("spec") or {}).get("template") or {}).get("spec") or {})
        containers = template.get("containers") or [{"name": "helm", "image": "alpine/helm"}]
        pod = {"metadata": {"name": pod_name, "namespace": ns,
                            "labels": {"job-name": job["metadata"]["name"],
                                       "batch.kubernetes.io/job-name": job["metadata"]["name"],
                                       "batch.kubernetes.io/controller-uid": job["metadata"]["uid"]},
                            "ownerReferences": [owner_ref(job)]},
               "spec": {**template, "containers": containers, "restartPolicy": "Never"},
               "status": {"phase": "Succeeded", "startTime": now,
                          "containerStatuses": [{"name": c.get("name", "helm"), "image": c.get("image", ""),
                                                 "imageID": image_id(c.get("image", "")), "ready": False,
                                                 "restartCount": 0,
                                                 "state": {"terminated": {"exitCode": 0, "reason": "Completed",
                                                                          "startedAt": now, "finishedAt": now}}}
                                                for c in containers]}}
        node = next((n for n in kube.list_objects("", "nodes") if fits_node(pod, n)[0]), None)
        if node is not None:
            pod["spec"]["nodeName"] = node["metadata"]["name"]
        kube.create(RT_POD, pod, ns)
        first = "does not exist. Installing it now." if revision == 1 else "has been upgraded. Happy Helming!"
        kube.data["logs"][f"{ns}/{pod_name}"] = (
            f'Release "{release}" {first}\n'
            f"NAME: {release}\nLAST DEPLOYED: {now}\nNAMESPACE: {ns}\nSTATUS: deployed\nREVISION: {revision}\n"
            f"CHART: argo-cd-{version}\n(simulated by the gpuplat sandbox: no helm ran)\n")
    write_status(kube, RT_JOB, job, {
        "startTime": now, "completionTime": now, "succeeded": 1, "active": 0, "ready": 0, "terminating": 0,
        "uncountedTerminatedPods": {},
        "conditions": [
            {"type": "SuccessCriteriaMet", "status": "True", "reason": "CompletionsReached",
             "message": "Reached expected number of succeeded pods", "lastProbeTime": now,
             "lastTransitionTime": now},
            {"type": "Complete", "status": "True", "reason": "CompletionsReached",
             "message": "Reached expected number of succeeded pods", "lastProbeTime": now,
             "lastTransitionTime": now}]})


# ---- admin ---------------------------------------------------------------------------------------------
def post_helm_install(sb: "Sandbox", req: Request):
    """`{cluster, release, namespace?, version, values?}`: what `helm upgrade --install <release>
    argo/argo-cd` run from a laptop leaves (the seed's bootstrap/install.sh): no Job, same result."""
    body = req.json()
    cid = resolve_cluster(sb, body.get("cluster"))
    if not body.get("release") or not body.get("version"):
        raise ApiError(400, "helm-install needs `release` and `version` (the argo-cd chart's)")
    values = body.get("values") or {}
    if not isinstance(values, dict):
        raise ApiError(400, "`values` must be a mapping (the parsed values file)")
    kube = sb.kube(cid)
    revision = helm_install(sb, kube, str(body["release"]), str(body.get("namespace") or ARGOCD_NS),
                            str(body["version"]), values)
    return {"cluster": cid, "release": body["release"], "revision": revision}


ADMIN_ROUTES = [Route("POST", r"/sandbox/argocd/helm-install", post_helm_install, "sim.argocd.helmInstall")]
