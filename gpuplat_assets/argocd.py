"""Argo CD itself: installed without a helm binary on the Dagster host, by a Job that runs helm in the cluster.

Both `gpu_stack` (the GPU Operator is an Argo CD Application) and `platform_installed` need it, so
whichever runs first bootstraps it.
"""

from __future__ import annotations

from .piece import Run, wait_until

ARGOCD_CHART_VERSION = "9.1.4"  # argo-cd chart from https://argoproj.github.io/argo-helm (Argo CD v3.2)
HELM_IMAGE = "alpine/helm:3.19.0"
ARGO_API = "argoproj.io/v1alpha1"
BOOTSTRAP_TIMEOUT_S = 600
BOOTSTRAP_LABEL = "app.kubernetes.io/name=argocd-bootstrap"


def meta(name: str, namespace: str | None = None, **labels) -> dict:
    m = {"name": name, "labels": {"app.kubernetes.io/managed-by": "gpuplat", **labels}}
    if namespace:
        m["namespace"] = namespace
    return m


def bootstrap_objects(version: str = ARGOCD_CHART_VERSION) -> tuple[dict, ...]:
    script = ("helm repo add argo https://argoproj.github.io/argo-helm && "
              f"helm upgrade --install argocd argo/argo-cd --version {version} --namespace argocd --wait --timeout 10m")
    return (
        {"apiVersion": "v1", "kind": "Namespace", "metadata": meta("argocd")},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta("gpuplat-bootstrap", "argocd")},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": meta("gpuplat-bootstrap"),
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
         "subjects": [{"kind": "ServiceAccount", "name": "gpuplat-bootstrap", "namespace": "argocd"}]},
        {"apiVersion": "batch/v1", "kind": "Job",
         "metadata": {**meta(f"argocd-bootstrap-{version.replace('.', '-')}", "argocd",
                             **{"app.kubernetes.io/name": "argocd-bootstrap"}),
                      "annotations": {"gpuplat.io/chart-version": version}},
         "spec": {"backoffLimit": 2, "template": {"spec": {
             "serviceAccountName": "gpuplat-bootstrap", "restartPolicy": "Never",
             "containers": [{"name": "helm", "image": HELM_IMAGE, "command": ["sh", "-c", script]}]}}}},
    )


def observe_argocd(run: Run) -> tuple[bool, str]:
    """(Argo CD's CRDs served, bootstrap Job state: "", running, succeeded or failed)."""
    kube = run.conn.kube
    installed = kube.has_kind(ARGO_API, "Application")
    job = next(iter(kube.list("batch/v1", "Job", "argocd", BOOTSTRAP_LABEL)), None)
    state = ""
    if job is not None:
        st = job.get("status") or {}
        state = "succeeded" if st.get("succeeded") else "failed" if (st.get("failed") or 0) > 2 else "running"
    return installed, state


def ensure_argocd(run: Run) -> None:
    """Bootstrap Argo CD when its CRDs are absent, then wait (bounded) for them."""
    kube = run.conn.kube
    if kube.has_kind(ARGO_API, "Application"):
        return
    run.log.info(f"bootstrapping Argo CD (chart {ARGOCD_CHART_VERSION}) with an in-cluster helm Job")
    for obj in bootstrap_objects():
        kube.apply(obj)
    if not wait_until(lambda: kube.has_kind(ARGO_API, "Application"), BOOTSTRAP_TIMEOUT_S, "Argo CD's CRDs", run.log):
        raise TimeoutError(f"Argo CD did not come up within {BOOTSTRAP_TIMEOUT_S}s: kubectl -n argocd get jobs,pods")
