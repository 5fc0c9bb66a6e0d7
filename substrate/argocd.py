"""Argo CD itself, installed as the fork's `bootstrap/install.sh` installs it.

Release `argo-cd` in namespace `argocd`, the chart version the fork pins (`CHART_VERSION` in
`bootstrap/install.sh`; `substrate.argocd_chart_version` overrides it), values from
`bootstrap/argo-cd/values.yaml`, and the `argocd-redis` secret created first when absent (the
fork's values turn the chart's redis-secret-init hook off; never rotated). There is no helm binary
on the Dagster host: a Job in the cluster runs helm with the values mounted from a ConfigMap.

An Argo CD the seed's script installed is adopted as it is: its Helm release record says which
chart version and values run, and a difference from the fork is drift shown in the plan. Once Argo
CD manages itself (the fork's `argo-cd` Application), upgrades are Argo CD's, from git.
This asset alone installs Argo CD; `gpu_stack` (the GPU Operator is an Argo CD Application) and
`platform_installed` (the fork's root objects) come after it.
"""

from __future__ import annotations

import secrets as pysecrets
from dataclasses import dataclass
from functools import cached_property

import yaml

from resources.helm import HelmRelease, releases, values_digest

from .config import EnvConfig
from .fork import ARGOCD_VALUES, INSTALL_SCRIPT, Fork
from .piece import Check, NotReady, Outcome, Piece, Run, wait_until
from .plan import Action

ARGO_API = "argoproj.io/v1alpha1"
NAMESPACE = "argocd"
RELEASE = "argo-cd"  # bootstrap/install.sh: helm upgrade --install argo-cd argo/argo-cd
CHART = "argo-cd"
CHART_REPO = "https://argoproj.github.io/argo-helm"
# When a fork has no bootstrap/install.sh: the version the seed pinned when gpuplat was built.
FALLBACK_CHART_VERSION = "9.5.21"
REDIS_SECRET = "argocd-redis"
VALUES_CONFIGMAP = "gpuplat-argocd-values"
HELM_IMAGE = "alpine/helm:3.19.0"
BOOTSTRAP_TIMEOUT_S = 600
BOOTSTRAP_LABEL = "app.kubernetes.io/name=argocd-bootstrap"
MANAGED_BY = {"app.kubernetes.io/managed-by": "gpuplat"}


@dataclass(frozen=True)
class ArgoCDSpec:
    chart_version: str
    version_from: str  # where the version was read
    values: dict
    values_from: str

    @cached_property
    def digest(self) -> str:  # asked by observe and by plan: the values are hashed once
        return values_digest(self.values)


@dataclass(frozen=True)
class ArgoCDObserved:
    crds: bool
    release: HelmRelease | None = None
    other_releases: tuple[str, ...] = ()  # argo-cd chart releases under another name (two Argo CDs would fight)
    redis_secret: bool = False
    self_managed: str = ""  # the chart version the fork's `argo-cd` Application pins, "" when none
    job: str = ""  # the bootstrap Job for this version and values: "", running, succeeded, failed

    def owned(self) -> dict:
        r = self.release
        return {"installed": self.crds, "release": f"{r.name} {r.chart}-{r.chart_version} rev {r.revision}" if r else "",
                "values_digest": r.values_digest if r else "", "redis_secret": self.redis_secret,
                "self_managed": self.self_managed}


def meta(name: str, namespace: str | None = None, **labels) -> dict:
    """Metadata of an object gpuplat itself authors (never of the fork's files, applied as they are)."""
    m = {"name": name, "labels": {**MANAGED_BY, **labels}}
    if namespace:
        m["namespace"] = namespace
    return m


# ---- desired ------------------------------------------------------------------------------------
def desired_argocd(env: EnvConfig, fork: Fork) -> ArgoCDSpec:
    if env.substrate.argocd_chart_version:
        version, source = env.substrate.argocd_chart_version, "substrate.argocd_chart_version"
    else:
        pinned = fork.argocd_chart_version()
        version, source = (pinned, f"{INSTALL_SCRIPT} CHART_VERSION") if pinned else (
            FALLBACK_CHART_VERSION, f"gpuplat's default (the fork has no {INSTALL_SCRIPT})")
    values = fork.argocd_values()
    return ArgoCDSpec(version, source, values, ARGOCD_VALUES if values else "none (the fork has no values file)")


# ---- observe ------------------------------------------------------------------------------------
def observe_argocd(run: Run, spec: ArgoCDSpec) -> ArgoCDObserved:
    kube = run.conn.kube
    crds = kube.has_kind(ARGO_API, "Application")
    found = [r for r in releases(kube, NAMESPACE) if r.chart == CHART]
    release = next((r for r in found if r.name == RELEASE), None)
    others = tuple(r.name for r in found if r.name != RELEASE)
    redis = kube.get("v1", "Secret", REDIS_SECRET, NAMESPACE) is not None
    self_managed = ""
    if crds:
        # From the namespace's list, which platform_installed reads too (one call a tick for both).
        app = next((a for a in kube.list(ARGO_API, "Application", NAMESPACE)
                    if (a.get("metadata") or {}).get("name") == RELEASE), None)
        for src in (((app or {}).get("spec") or {}).get("sources") or []) + [((app or {}).get("spec") or {}).get("source") or {}]:
            if src.get("chart") == CHART:
                self_managed = str(src.get("targetRevision") or "")
    state = ""
    # The bootstrap Job matters while the release is not yet what the fork asks for: once it is, a
    # drift tick does not read Jobs.
    if not _installed_as_asked(spec, release):
        job = next(iter(kube.list("batch/v1", "Job", NAMESPACE,
                                  f"{BOOTSTRAP_LABEL},gpuplat.io/bootstrap={_job_key(spec)}")), None)
        if job is not None:
            st = job.get("status") or {}
            state = "succeeded" if st.get("succeeded") else "failed" if (st.get("failed") or 0) > 2 else "running"
    return ArgoCDObserved(crds, release, others, redis, self_managed, state)


def _installed_as_asked(spec: ArgoCDSpec, release: HelmRelease | None) -> bool:
    return release is not None and (release.chart_version, release.values_digest) == (spec.chart_version, spec.digest)


# ---- plan ---------------------------------------------------------------------------------------
def plan_argocd(spec: ArgoCDSpec, observed: ArgoCDObserved) -> list[Action]:
    wanted = f"release {RELEASE}, chart {CHART} {spec.chart_version} ({spec.version_from}), values {spec.values_from}"
    if observed.other_releases:
        return [Action("cannot-fix", "Argo CD", "release", observed=f"installed as release "
                       f"{', '.join(observed.other_releases)}; the fork installs release {RELEASE}",
                       desired=wanted, remedy=f"two Argo CDs would fight over the same CRDs: uninstall the other "
                       f"release yourself (helm -n {NAMESPACE} uninstall <name>) or keep it and leave Argo CD to it")]
    if observed.job == "failed":
        return [Action("cannot-fix", "Argo CD", observed="the bootstrap Job failed",
                       remedy=f"kubectl -n {NAMESPACE} logs -l {BOOTSTRAP_LABEL}; fix the cause, delete the Job")]
    actions = []
    if not observed.redis_secret:
        actions.append(Action("create", f"Secret {NAMESPACE}/{REDIS_SECRET}", desired="random hex24 (create-if-absent)"))
    if observed.release is None:
        if not observed.crds:
            actions.append(Action("create", "Argo CD", desired=wanted))
        return actions  # served without a Helm release: installed another way, adopted as it is
    if observed.self_managed:
        if observed.self_managed != spec.chart_version:
            actions.append(Action("cannot-fix", "Argo CD", "chart version", observed=observed.self_managed,
                                  desired=spec.chart_version, remedy=f"Argo CD manages itself: pin the same version "
                                  f"in the fork's argo-cd Application and in {INSTALL_SCRIPT}"))
        return actions
    rel = observed.release
    if rel.chart_version != spec.chart_version:
        actions.append(Action("update", f"Argo CD release {RELEASE}", "chart version", observed=rel.chart_version,
                              desired=spec.chart_version))
    if rel.values_digest != spec.digest:
        changed = ", ".join(changed_keys(rel.values, spec.values)[:8])
        actions.append(Action("update", f"Argo CD release {RELEASE}", "values",
                              observed=f"differs from {spec.values_from} at {changed}", desired=spec.values_from))
    return actions


def changed_keys(live, want, prefix: str = "") -> list[str]:
    """Dotted paths where two values trees differ (names only: values may hold credentials)."""
    if isinstance(live, dict) and isinstance(want, dict):
        out = []
        for k in sorted({*live, *want}, key=str):
            out += changed_keys(live.get(k), want.get(k), f"{prefix}{k}.")
        return out
    return [] if live == want else [prefix.rstrip(".") or "(root)"]


# ---- apply --------------------------------------------------------------------------------------
def _job_key(spec: ArgoCDSpec) -> str:
    return f"{spec.chart_version.replace('.', '-')}-{spec.digest[:8]}"


def bootstrap_objects(spec: ArgoCDSpec) -> tuple[dict, ...]:
    """The Job that runs `bootstrap/install.sh`'s helm command in the cluster, and what it needs."""
    script = (f"helm repo add argo {CHART_REPO} && helm upgrade --install {RELEASE} argo/{CHART} "
              f"--version {spec.chart_version} --namespace {NAMESPACE} -f /values/values.yaml --wait --timeout 10m")
    key = _job_key(spec)
    return (
        {"apiVersion": "v1", "kind": "Namespace", "metadata": meta(NAMESPACE)},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta(VALUES_CONFIGMAP, NAMESPACE),
         "data": {"values.yaml": yaml.safe_dump(spec.values, sort_keys=False)}},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta("gpuplat-bootstrap", NAMESPACE)},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": meta("gpuplat-bootstrap"),
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
         "subjects": [{"kind": "ServiceAccount", "name": "gpuplat-bootstrap", "namespace": NAMESPACE}]},
        {"apiVersion": "batch/v1", "kind": "Job",
         "metadata": {**meta(f"argocd-bootstrap-{key}", NAMESPACE, **{"app.kubernetes.io/name": "argocd-bootstrap",
                                                                       "gpuplat.io/bootstrap": key}),
                      "annotations": {"gpuplat.io/chart-version": spec.chart_version, "gpuplat.io/release": RELEASE}},
         "spec": {"backoffLimit": 2, "template": {"spec": {
             "serviceAccountName": "gpuplat-bootstrap", "restartPolicy": "Never",
             "containers": [{"name": "helm", "image": HELM_IMAGE, "command": ["sh", "-c", script],
                             "volumeMounts": [{"name": "values", "mountPath": "/values"}]}],
             "volumes": [{"name": "values", "configMap": {"name": VALUES_CONFIGMAP}}]}}}},
    )


def apply_argocd(run: Run, spec: ArgoCDSpec, observed: ArgoCDObserved, actions: list[Action]) -> None:
    kube = run.conn.kube
    targets = {a.target for a in actions}
    if f"Secret {NAMESPACE}/{REDIS_SECRET}" in targets:
        kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
        # Created, never applied over: a live redis password must not rotate mid-flight.
        if kube.get("v1", "Secret", REDIS_SECRET, NAMESPACE) is None:
            kube.create({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                         "metadata": {"name": REDIS_SECRET, "namespace": NAMESPACE, "labels": dict(MANAGED_BY)},
                         "stringData": {"auth": pysecrets.token_hex(24)}})
            run.log.info(f"created Secret {NAMESPACE}/{REDIS_SECRET} (value not shown)")
    if not targets & {"Argo CD", f"Argo CD release {RELEASE}"}:
        return
    run.log.info(f"installing Argo CD: release {RELEASE}, chart {spec.chart_version} ({spec.version_from}), "
                 f"values {spec.values_from}, by an in-cluster helm Job")
    for obj in bootstrap_objects(spec):
        kube.apply(obj)

    def done():
        now = observe_argocd(run, spec)
        return (now.job in ("succeeded", "failed") or _installed_as_asked(spec, now.release)) and now
    final = wait_until(done, BOOTSTRAP_TIMEOUT_S, "the Argo CD bootstrap Job", run.log)
    if not final or final.job == "failed":
        raise NotReady(f"Argo CD bootstrap did not succeed within {BOOTSTRAP_TIMEOUT_S}s",
                       f"kubectl -n {NAMESPACE} logs -l {BOOTSTRAP_LABEL}")
    if not wait_until(lambda: kube.has_kind(ARGO_API, "Application"), BOOTSTRAP_TIMEOUT_S, "Argo CD's CRDs", run.log):
        raise NotReady(f"Argo CD's CRDs did not appear within {BOOTSTRAP_TIMEOUT_S}s", f"kubectl -n {NAMESPACE} get pods")


# ---- checks -------------------------------------------------------------------------------------
def check_crds(spec: ArgoCDSpec, observed: ArgoCDObserved, env: EnvConfig) -> Outcome:
    return Outcome(observed.crds, "Argo CD CRDs present" if observed.crds else "Argo CD CRDs absent",
                   {"remedy": "" if observed.crds else "materialize argocd"})


class ArgoCD(Piece[ArgoCDSpec, ArgoCDObserved]):
    name = "argocd"
    description = ("Argo CD as the fork's bootstrap installs it: release argo-cd, the pinned chart version and "
                   "values, the argocd-redis Secret.")
    group = "platform"
    kinds = frozenset({"kubernetes", "argocd"})
    deps = ("cluster",)
    owned_fields = ("Argo CD release argo-cd (chart version, values)", "Secret argocd/argocd-redis (created once)")
    checks = (Check("argocd_crds_present", "Argo CD's CRDs are served by the cluster.", check_crds),)

    def desired(self, env: EnvConfig) -> ArgoCDSpec:
        return desired_argocd(env, Fork.of(env))

    def observe(self, run: Run, spec: ArgoCDSpec) -> ArgoCDObserved:
        return observe_argocd(run, spec)

    def plan(self, spec: ArgoCDSpec, observed: ArgoCDObserved) -> list[Action]:
        return plan_argocd(spec, observed)

    def apply(self, run: Run, spec: ArgoCDSpec, observed: ArgoCDObserved, actions: list[Action]) -> None:
        apply_argocd(run, spec, observed, actions)


PIECE = ArgoCD()
