"""platform_installed: Argo CD bootstrapped, the seed's root objects applied, every Application Synced and Healthy.

The root objects are the same as the seed's `make root PROFILE=...`: AppProject `platform`, one
ApplicationSet `layer-<layer>` per layer of the deploy profile (git files generator on the fork), and
the ESO `ClusterSecretStore` `secret-store`. Argo CD itself is installed without a helm binary on the
Dagster host: a Job in the cluster runs helm at a pinned chart version.
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import EnvConfig
from .argocd import ARGO_API, ARGOCD_CHART_VERSION, ensure_argocd, meta, observe_argocd
from .piece import Check, Outcome, Piece, Run, wait_until
from .plan import Action

ESO_API = "external-secrets.io/v1"
LAYERS = {
    "platform": ("platform",),
    "serving": ("platform", "serving"),
    "llm-gateway": ("platform", "serving", "routing", "llm-gateway"),
    "full": ("platform", "serving", "routing", "llm-gateway", "experience", "demos"),
}
CHART_REPOS = ("https://argoproj.github.io/argo-helm", "https://charts.external-secrets.io",
               "https://charts.jetstack.io", "https://prometheus-community.github.io/helm-charts",
               "https://nvidia.github.io/gpu-operator", "https://cloudnative-pg.github.io/charts")
SYNC_TIMEOUT_S = 900
ERR_NOT_HEALTHY = "Applications not Synced and Healthy"


@dataclass(frozen=True)
class PlatformSpec:
    chart_version: str
    roots: tuple[dict, ...]
    secret_store: dict
    store_is_placeholder: bool
    groups: tuple[dict, ...]


@dataclass(frozen=True)
class PlatformObserved:
    argocd: bool
    bootstrap_job: str = ""  # "", "running", "succeeded", "failed"
    drifted_roots: tuple[str, ...] = ()
    secret_store: str = "absent"  # absent | matches | differs | user-filled
    # ESO's own verdict on the store (status condition Ready): whether it can reach the backend.
    store_ready: tuple[str, str] = ("", "")  # (True/False/"", message)
    eso: bool = False
    apps: tuple[tuple[str, str, str], ...] = ()  # (name, sync, health)
    # LoadBalancer Services still waiting for an external address (only observed when a domain is set).
    lb_pending: tuple[str, ...] = ()
    lb_total: int = 0

    def owned(self) -> dict:
        return {"argocd": self.argocd, "drifted_roots": list(self.drifted_roots), "secret_store": self.secret_store,
                "apps": [list(a) for a in self.apps]}

    @property
    def unhealthy(self) -> list[str]:
        return [f"{n} ({s}/{h})" for n, s, h in self.apps if (s, h) != ("Synced", "Healthy")]


# ---- desired ------------------------------------------------------------------------------------
def desired_platform(env: EnvConfig) -> PlatformSpec:
    project = {"apiVersion": ARGO_API, "kind": "AppProject", "metadata": meta("platform", "argocd"),
               "spec": {"sourceRepos": [env.repoURL, *CHART_REPOS],
                        "destinations": [{"server": "https://kubernetes.default.svc", "namespace": "*"}],
                        "clusterResourceWhitelist": [{"group": "*", "kind": "*"}]}}
    roots = [project]
    for layer in LAYERS[env.substrate.layer]:
        roots.append({
            "apiVersion": ARGO_API, "kind": "ApplicationSet",
            "metadata": meta(f"layer-{layer}", "argocd", **{"gpuplat.io/layer": layer}),
            "spec": {
                "goTemplate": True, "goTemplateOptions": ["missingkey=error"],
                "generators": [{"git": {"repoURL": env.repoURL, "revision": env.repoBranch,
                                        "files": [{"path": f"clusters/{env.cluster.name}/groups.generated.yaml"}]},
                                "selector": {"matchLabels": {"enabled": "true", "layer": layer}}}],
                "template": {
                    "metadata": {"name": "group-{{.name}}"},
                    "spec": {"project": "platform",
                             "source": {"repoURL": env.repoURL, "targetRevision": env.repoBranch,
                                        "path": "{{.catalogPath}}", "directory": {"recurse": True}},
                             "destination": {"server": "https://kubernetes.default.svc"},
                             "syncPolicy": {"automated": {"prune": True, "selfHeal": True},
                                            "syncOptions": ["ServerSideApply=true"]}}}}})
    if env.secret_backend == "gcpsm":
        provider: dict = {"gcpsm": {"projectID": env.cluster.projectID}}
        if env.secret_store_auth == "sa-key":
            provider["gcpsm"]["auth"] = {"secretRef": {"secretAccessKeySecretRef": {
                "name": "secret-store-key", "key": "sa-key.json", "namespace": "external-secrets"}}}
    else:
        provider = {}  # a placeholder the user fills for their backend; never overwritten once filled
    store = {"apiVersion": ESO_API, "kind": "ClusterSecretStore", "metadata": meta("secret-store"),
             "spec": {"provider": provider}}
    groups = tuple(g.model_dump() for g in env.sandbox.groups)
    return PlatformSpec(ARGOCD_CHART_VERSION, tuple(roots), store,
                        env.secret_backend != "gcpsm", groups)


# ---- observe ------------------------------------------------------------------------------------
def contains(desired, live) -> bool:
    """Whether every field gpuplat sets is in the live object with that value (others' fields ignored)."""
    if isinstance(desired, dict):
        return isinstance(live, dict) and all(contains(v, live.get(k)) for k, v in desired.items())
    if isinstance(desired, list):
        return isinstance(live, list) and len(desired) == len(live) and all(map(contains, desired, live))
    return desired == live


def _owned_view(obj: dict) -> dict:
    return {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata")} | {
        "metadata": {"labels": obj["metadata"].get("labels", {})}}


def observe_platform(run: Run, spec: PlatformSpec) -> PlatformObserved:
    kube = run.conn.kube
    argocd, job_state = observe_argocd(run)
    if not argocd:
        return PlatformObserved(False, job_state)
    drifted = []
    for obj in spec.roots:
        live = kube.get(obj["apiVersion"], obj["kind"], obj["metadata"]["name"], obj["metadata"].get("namespace"))
        if live is None or not contains(_owned_view(obj), live):
            drifted.append(f"{obj['kind']}/{obj['metadata']['name']}")
    eso = kube.has_kind(ESO_API, "ClusterSecretStore")
    store = "absent"
    store_ready = ("", "")
    if eso:
        live = kube.get(ESO_API, "ClusterSecretStore", "secret-store")
        if live is not None:
            ready = next((c for c in (live.get("status") or {}).get("conditions") or [] if c.get("type") == "Ready"), {})
            store_ready = (ready.get("status", ""), ready.get("message", ""))
            live_provider = (live.get("spec") or {}).get("provider") or {}
            if spec.store_is_placeholder:
                store = "user-filled" if live_provider else "matches"
            else:
                store = "matches" if contains(spec.secret_store["spec"], live.get("spec") or {}) else "differs"
    lb_pending, lb_total = observe_load_balancers(run) if run.env.domain else ((), 0)
    apps = tuple(sorted((a["metadata"]["name"], ((a.get("status") or {}).get("sync") or {}).get("status", "Unknown"),
                         ((a.get("status") or {}).get("health") or {}).get("status", "Unknown"))
                        for a in kube.list(ARGO_API, "Application", "argocd")))
    return PlatformObserved(True, job_state, tuple(drifted), store, store_ready, eso, apps, lb_pending, lb_total)


def observe_load_balancers(run: Run) -> tuple[tuple[str, ...], int]:
    lbs = [s for s in run.conn.kube.list("v1", "Service") if (s.get("spec") or {}).get("type") == "LoadBalancer"]
    pending = tuple(sorted(f"{s['metadata']['namespace']}/{s['metadata']['name']}" for s in lbs
                           if not (((s.get("status") or {}).get("loadBalancer") or {}).get("ingress"))))
    return pending, len(lbs)


# ---- plan ---------------------------------------------------------------------------------------
def plan_platform(spec: PlatformSpec, observed: PlatformObserved) -> list[Action]:
    actions = []
    if not observed.argocd:
        if observed.bootstrap_job == "failed":
            return [Action("cannot-fix", "Argo CD", observed="bootstrap Job failed",
                           remedy="kubectl -n argocd logs job/argocd-bootstrap-... ; fix the cause and delete the Job")]
        actions.append(Action("create", "Argo CD", desired=f"argo-cd chart {spec.chart_version} via an in-cluster helm Job"))
        actions.extend(Action("create", f"{o['kind']} {o['metadata']['name']}") for o in spec.roots)
        actions.append(Action("create", "ClusterSecretStore secret-store"))
        return actions
    for name in observed.drifted_roots:
        actions.append(Action("update", name.replace("/", " "), "spec", desired="as rendered from the config",
                              observed="differs or absent"))
    if observed.secret_store in ("absent", "differs"):
        actions.append(Action("create" if observed.secret_store == "absent" else "update",
                              "ClusterSecretStore secret-store", "spec.provider",
                              desired=spec.secret_store["spec"]["provider"] or "placeholder {}"))
    return actions


# ---- apply --------------------------------------------------------------------------------------
def apply_platform(run: Run, spec: PlatformSpec, observed: PlatformObserved, actions: list[Action]) -> None:
    kube = run.conn.kube
    ensure_argocd(run)
    if spec.groups:
        run.conn.sandbox_groups(kube.target.context, list(spec.groups))
    for obj in spec.roots:
        if not observed.argocd or f"{obj['kind']}/{obj['metadata']['name']}" in observed.drifted_roots:
            run.log.info(f"applying {obj['kind']} {obj['metadata']['name']}")
            kube.apply(obj)
    if observed.secret_store in ("absent", "differs") or not observed.argocd:
        # ESO itself arrives with the platform layer: wait for its CRD before applying the store.
        if not wait_until(lambda: kube.has_kind(ESO_API, "ClusterSecretStore"), SYNC_TIMEOUT_S,
                          "External Secrets Operator's CRDs", run.log):
            raise TimeoutError("External Secrets Operator's CRDs did not appear: is the platform layer's "
                               "external-secrets group enabled?")
        live = kube.get(ESO_API, "ClusterSecretStore", "secret-store")
        filled = live is not None and ((live.get("spec") or {}).get("provider") or {})
        if not (spec.store_is_placeholder and filled):
            kube.apply(spec.secret_store)

    def healthy():
        apps = kube.list(ARGO_API, "Application", "argocd")
        bad = [a["metadata"]["name"] for a in apps
               if ((a.get("status") or {}).get("sync") or {}).get("status") != "Synced"
               or ((a.get("status") or {}).get("health") or {}).get("status") != "Healthy"]
        return bool(apps) and not bad
    if not wait_until(healthy, SYNC_TIMEOUT_S, "every Application Synced and Healthy", run.log):
        after = observe_platform(run, spec)
        raise TimeoutError(f"{ERR_NOT_HEALTHY} after {SYNC_TIMEOUT_S}s: {', '.join(after.unhealthy) or 'none exist'}")


# ---- checks -------------------------------------------------------------------------------------
def check_argocd(spec: PlatformSpec, observed: PlatformObserved, env: EnvConfig) -> Outcome:
    return Outcome(observed.argocd, "Argo CD CRDs present" if observed.argocd else "Argo CD CRDs absent",
                   {"remedy": "" if observed.argocd else "materialize platform_installed"})


def check_apps(spec: PlatformSpec, observed: PlatformObserved, env: EnvConfig) -> Outcome:
    bad = observed.unhealthy
    ok = observed.argocd and bool(observed.apps) and not bad
    return Outcome(ok, f"{len(observed.apps) - len(bad)}/{len(observed.apps)} Applications Synced and Healthy",
                   {"not_healthy": ", ".join(bad),
                    "remedy": "" if ok else "argocd app get <name> / kubectl -n argocd describe application <name>"})


def check_store_ready(spec: PlatformSpec, observed: PlatformObserved, env: EnvConfig) -> Outcome:
    status, message = observed.store_ready
    if status == "True":
        return Outcome(True, "ClusterSecretStore secret-store is Ready: ESO can read the backend")
    if spec.store_is_placeholder:
        remedy = (f"fill spec.provider of ClusterSecretStore secret-store for your {env.secret_backend} backend "
                  f"(https://external-secrets.io/latest/provider/); gpuplat never overwrites it once filled")
    elif env.secret_store_auth == "sa-key":
        remedy = ("kubectl -n external-secrets create secret generic secret-store-key --from-file=sa-key.json=<key "
                  "file of a service account with roles/secretmanager.secretAccessor>")
    else:
        remedy = (f"grant roles/secretmanager.secretAccessor in {env.cluster.projectID} to ESO's Kubernetes service "
                  f"account through Workload Identity (principal://iam.googleapis.com/projects/<number>/locations/"
                  f"global/workloadIdentityPools/{env.cluster.projectID}.svc.id.goog/subject/ns/external-secrets/sa/"
                  f"external-secrets)")
    return Outcome(False, f"ClusterSecretStore secret-store not Ready: {message or observed.secret_store}",
                   {"remedy": remedy})


def check_ingress(spec: PlatformSpec, observed: PlatformObserved, env: EnvConfig) -> Outcome:
    if not env.domain:
        return Outcome(True, "no domain set: nothing is exposed publicly, no external address needed")
    if not observed.lb_pending:
        return Outcome(True, f"{observed.lb_total} LoadBalancer Service(s), all with an external address",
                       {"domain": env.domain})
    if env.substrate.kind == "hetzner":
        remedy = ("the hcloud cloud controller cannot place the load balancer: set HCLOUD_LOAD_BALANCERS_NETWORK_ZONE "
                  "(e.g. eu-central) or HCLOUD_LOAD_BALANCERS_LOCATION in the hcloud-cloud-controller-manager's "
                  "environment, or annotate the Service with load-balancer.hetzner.cloud/location")
    elif env.is_gke:
        remedy = "kubectl describe service <name>: GKE's events say why the Cloud Load Balancer was not created"
    else:
        remedy = "install a load-balancer implementation (MetalLB, kube-vip) or your provider's cloud controller"
    return Outcome(False, f"{len(observed.lb_pending)} LoadBalancer Service(s) without an external address: "
                          f"{', '.join(observed.lb_pending)}", {"domain": env.domain, "remedy": remedy})


PIECE = Piece(
    name="platform_installed",
    description="Argo CD bootstrapped at a pinned chart, the seed's root objects applied, every Application Synced and Healthy.",
    group="platform", kinds=frozenset({"kubernetes", "argocd"}),
    deps=("cluster", "gpu_stack", "storage_class", "snapshot_class", "secrets_seeded"),
    owned_fields=("AppProject platform spec", "ApplicationSet layer-* spec", "ClusterSecretStore secret-store provider"),
    desired=desired_platform, observe=observe_platform, plan=plan_platform, apply=apply_platform,
    checks=(Check("argocd_crds_present", "Argo CD's CRDs are served by the cluster.", check_argocd),
            Check("applications_healthy", "Every platform Application is Synced and Healthy.", check_apps),
            Check("secret_store_ready", "ESO reports the ClusterSecretStore secret-store Ready: it can read the "
                  "secret backend.", check_store_ready),
            Check("ingress_addresses", "When a domain is set, every LoadBalancer Service has an external address.",
                  check_ingress)),
)
