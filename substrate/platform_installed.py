"""platform_installed: the fork's root objects as `make root` applies them (Argo CD itself is the `argocd`
asset's, before this one), and every automated Application Synced and Healthy.

The root objects are the fork's own files, field for field: `clusters/<env>/projects/*.yaml` and
`clusters/<env>/appsets/<layer>.yaml` for each layer of the profile (`substrate.layer`). Drift is a
live object that differs from its file in a field the file sets. gpuplat applies with server-side
apply and writes the last-applied annotation `kubectl apply` would write for the same file, so
the seed's `make root` and gpuplat take turns without a change or a conflict. The ClusterSecretStore
is the fork's (Argo CD applies `platform/external-secrets/config/`); a fork without one gets the
store the seed's `make resolve-secret-store` would render, applied by gpuplat.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass
from pathlib import Path

from .argocd import ARGO_API
from .config import EnvConfig
from .fork import SECRET_STORE_FILE, Fork
from .piece import Check, NotReady, Outcome, Piece, Run, wait_until
from .plan import Action
from .secrets_seeded import ensure_version, readable

ESO_API = "external-secrets.io/v1"
SYNC_TIMEOUT_S = 900
ERR_NOT_HEALTHY = "Applications not Synced and Healthy"
REPO_SECRET = "platform-repo"
REPO_LABEL = "argocd.argoproj.io/secret-type"


@dataclass(frozen=True)
class PlatformSpec:
    repo: str  # the fork's checkout
    commit: str
    repo_url: str
    roots: tuple[dict, ...]
    secret_store: dict
    store_from_fork: bool  # the fork holds the store: Argo CD applies it, gpuplat only looks
    store_is_placeholder: bool
    private_repo: object | None  # config.PrivateRepo
    backend_writable: bool  # gcpsm: gpuplat reads and writes Secret Manager


@dataclass(frozen=True)
class PlatformObserved:
    installed: bool  # Argo CD's CRDs are served (the argocd asset installed it)
    # (kind/name, fields that differ from the file, or ("absent",))
    drifted_roots: tuple[tuple[str, tuple[str, ...]], ...] = ()
    secret_store: str = "absent"  # absent | matches | differs | user-filled
    # ESO's own verdict on the store (status condition Ready): whether it can reach the backend.
    store_ready: tuple[str, str] = ("", "")  # (True/False/"", message)
    eso: bool = False
    apps: tuple[tuple[str, str, str, bool], ...] = ()  # (name, sync, health, automated)
    # LoadBalancer Services still waiting for an external address (only observed when a domain is set).
    lb_pending: tuple[str, ...] = ()
    lb_total: int = 0
    # The private fork's credential: "" (public), absent | matches | differs, and whether the backend holds it.
    repo_secret: str = ""
    repo_token_stored: bool = False
    repo_token_in_env: bool = False  # whether substrate.private_repo.env is set (presence only)

    def owned(self) -> dict:
        return {"argocd_installed": self.installed, "drifted_roots": {k: list(v) for k, v in self.drifted_roots},
                "secret_store": self.secret_store, "apps": [list(a[:3]) for a in self.apps if a[3]],
                "repo_secret": self.repo_secret}

    @property
    def unhealthy(self) -> list[str]:
        return [f"{n} ({s}/{h})" for n, s, h, auto in self.apps if auto and (s, h) != ("Synced", "Healthy")]

    @property
    def dormant(self) -> list[str]:
        return [n for n, _, _, auto in self.apps if not auto]


# ---- desired ------------------------------------------------------------------------------------
def rendered_store(env: EnvConfig) -> dict:
    """The ClusterSecretStore the seed's `make resolve-secret-store` renders for this config."""
    if env.secret_backend == "gcpsm":
        provider: dict = {"gcpsm": {"projectID": env.cluster.projectID}}
        if env.secret_store_auth == "sa-key":
            provider["gcpsm"]["auth"] = {"secretRef": {"secretAccessKeySecretRef": {
                "name": "secret-store-key", "key": "sa-key.json", "namespace": "external-secrets"}}}
    else:
        provider = {}  # a placeholder the user fills for their backend; never overwritten once filled
    return {"apiVersion": ESO_API, "kind": "ClusterSecretStore", "metadata": {"name": "secret-store"},
            "spec": {"provider": provider}}


def desired_platform(env: EnvConfig) -> PlatformSpec:
    fork = Fork.of(env)
    roots = fork.root_objects(env.substrate.layer, env.repoURL, env.path)
    fork.groups()  # every ApplicationSet reads it: missing, it is the seed's `make resolve-groups`
    store = fork.secret_store()
    return PlatformSpec(str(fork.root), fork.commit, env.repoURL, roots,
                        store or rendered_store(env), store is not None,
                        store is None and env.secret_backend != "gcpsm", env.substrate.private_repo,
                        env.secret_backend == "gcpsm")


def provenance(spec: PlatformSpec) -> dict[str, str]:
    return {"platform_repo": spec.repo, "platform_commit": spec.commit}


# ---- observe ------------------------------------------------------------------------------------
def differences(want, live, path: str = "") -> list[str]:
    """Dotted paths where `live` differs from `want` in a field `want` sets (others' fields ignored)."""
    if isinstance(want, dict):
        if not isinstance(live, dict):
            return [path or "(object)"]
        out = []
        for k, v in want.items():
            out += differences(v, live.get(k), f"{path}.{k}" if path else str(k))
        return out
    if isinstance(want, list):
        ok = isinstance(live, list) and len(want) == len(live) and not any(
            differences(w, v) for w, v in zip(want, live))
        return [] if ok else [path]
    return [] if want == live else [path]


def observe_platform(run: Run, spec: PlatformSpec) -> PlatformObserved:
    kube = run.conn.kube
    # The sandbox has no network: its Argo CD reads the fork from this checkout (a no-op elsewhere).
    run.conn.sandbox_git(spec.repo_url, Path(spec.repo))
    installed = kube.has_kind(ARGO_API, "Application")
    repo = observe_repo_credential(run, spec) if spec.private_repo else ("", False, False)
    if not installed:
        return PlatformObserved(False, repo_secret=repo[0], repo_token_stored=repo[1], repo_token_in_env=repo[2])
    drifted = []
    for obj in spec.roots:
        meta = obj["metadata"]
        live = kube.get(obj["apiVersion"], obj["kind"], meta["name"], meta.get("namespace"))
        diff = ("absent",) if live is None else tuple(differences(obj, live))
        if diff:
            drifted.append((f"{obj['kind']}/{meta['name']}", diff))
    eso = kube.has_kind(ESO_API, "ClusterSecretStore")
    store, store_ready = "absent", ("", "")
    if eso:
        live = kube.get(ESO_API, "ClusterSecretStore", "secret-store")
        if live is not None:
            ready = next((c for c in (live.get("status") or {}).get("conditions") or [] if c.get("type") == "Ready"), {})
            store_ready = (ready.get("status", ""), ready.get("message", ""))
            if spec.store_is_placeholder:
                store = "user-filled" if ((live.get("spec") or {}).get("provider") or {}) else "matches"
            else:
                store = "differs" if differences(spec.secret_store["spec"], live.get("spec") or {}) else "matches"
    lb_pending, lb_total = observe_load_balancers(run) if run.env.domain else ((), 0)
    apps = []
    for a in kube.list(ARGO_API, "Application", "argocd"):
        status = a.get("status") or {}
        automated = ((a.get("spec") or {}).get("syncPolicy") or {}).get("automated") is not None
        apps.append((a["metadata"]["name"], (status.get("sync") or {}).get("status", "Unknown"),
                     (status.get("health") or {}).get("status", "Unknown"), automated))
    return PlatformObserved(True, tuple(drifted), store, store_ready, eso, tuple(sorted(apps)), lb_pending, lb_total,
                            *repo)


def observe_load_balancers(run: Run) -> tuple[tuple[str, ...], int]:
    lbs = [s for s in run.conn.kube.list("v1", "Service") if (s.get("spec") or {}).get("type") == "LoadBalancer"]
    pending = tuple(sorted(f"{s['metadata']['namespace']}/{s['metadata']['name']}" for s in lbs
                           if not (((s.get("status") or {}).get("loadBalancer") or {}).get("ingress"))))
    return pending, len(lbs)


def _decoded(secret: dict, key: str) -> bytes:
    raw = (secret.get("data") or {}).get(key)
    return base64.b64decode(raw) if raw else b""


def _repo_secret(run: Run, spec: PlatformSpec) -> dict | None:
    """Argo CD's repository Secret for the fork (any name: `make argocd-repo` may have made it)."""
    url = spec.repo_url.encode()
    return next((s for s in run.conn.kube.list("v1", "Secret", "argocd", f"{REPO_LABEL}=repository")
                 if _decoded(s, "url").rstrip(b"/") == url.rstrip(b"/")), None)


def _repo_token(run: Run, spec: PlatformSpec) -> bytes | None:
    if run.env.secret_backend != "gcpsm":
        return None
    g = run.conn.google
    name = spec.private_repo.secret
    return g.access_secret(name) if name in g.secret_ids() and readable(g, name) else None


def observe_repo_credential(run: Run, spec: PlatformSpec) -> tuple[str, bool, bool]:
    """(repository Secret absent|matches|differs, token in the backend, token in the environment
    variable): compared in this process; no value is kept, logged or returned."""
    token = _repo_token(run, spec)
    in_env = bool(os.environ.get(spec.private_repo.env))
    live = _repo_secret(run, spec) if run.conn.kube.get("v1", "Namespace", "argocd") else None
    if live is None:
        return "absent", token is not None, in_env
    if token is None:
        return "matches", False, in_env  # gpuplat cannot read the backend: the live Secret is the truth
    return ("matches" if _decoded(live, "password") == token.strip() else "differs"), True, in_env


# ---- plan ---------------------------------------------------------------------------------------
def plan_platform(spec: PlatformSpec, observed: PlatformObserved) -> list[Action]:
    if not observed.installed:
        return [Action("cannot-fix", "Argo CD", observed="not installed", desired="installed",
                       remedy="materialize argocd first: it installs Argo CD, which applies the fork's root objects")]
    actions = plan_repo_credential(spec, observed)
    if any(a.kind == "cannot-fix" for a in actions):
        return actions  # nothing Argo CD could not read from the fork is applied
    for name, fields in observed.drifted_roots:
        kind, obj_name = name.split("/", 1)
        if fields == ("absent",):
            actions.append(Action("create", f"{kind} {obj_name}", desired="as the fork's file"))
        else:
            actions.append(Action("update", f"{kind} {obj_name}", ", ".join(fields[:6]),
                                  desired="the fork's file", observed="differs"))
    if not spec.store_from_fork and observed.secret_store in ("absent", "differs"):
        actions.append(Action("create" if observed.secret_store == "absent" else "update",
                              "ClusterSecretStore secret-store", "spec.provider",
                              desired=spec.secret_store["spec"]["provider"] or "placeholder {}"))
    return actions


def plan_repo_credential(spec: PlatformSpec, observed: PlatformObserved) -> list[Action]:
    if not spec.private_repo or observed.repo_secret == "matches":
        return []
    pr = spec.private_repo
    actions = []
    if not observed.repo_token_stored:
        if not (observed.repo_token_in_env and spec.backend_writable):
            return [Action("cannot-fix", f"Argo CD repository Secret {REPO_SECRET}", observed="no token to write",
                           remedy=f"store the fork's read-only token as secret {pr.secret} in the backend, or (gcpsm) "
                                  f"export {pr.env}=<token> and materialize again: gpuplat stores it there once")]
        actions.append(Action("create", f"secret {pr.secret}", desired=f"from ${pr.env}, once (value not shown)"))
    kind = "create" if observed.repo_secret == "absent" else "update"
    return actions + [Action(kind, f"Argo CD repository Secret {REPO_SECRET}", "password" if kind == "update" else "",
                   desired=f"from backend secret {pr.secret}", observed=observed.repo_secret)]


# ---- apply --------------------------------------------------------------------------------------
def apply_platform(run: Run, spec: PlatformSpec, observed: PlatformObserved, actions: list[Action]) -> None:
    kube = run.conn.kube
    if spec.private_repo and any(a.target == f"secret {spec.private_repo.secret}" for a in actions):
        ensure_version(run.conn.google, spec.private_repo.secret, lambda: os.environ[spec.private_repo.env].encode())
    if any(a.target.startswith("Argo CD repository Secret") and a.kind != "cannot-fix" for a in actions):
        write_repo_secret(run, spec)
    todo = {a.target for a in actions}
    for obj in spec.roots:
        if f"{obj['kind']} {obj['metadata']['name']}" in todo:
            run.log.info(f"applying {obj['kind']} {obj['metadata']['name']} from the fork ({spec.commit})")
            kube.apply(obj, as_kubectl_would=True)
    if "ClusterSecretStore secret-store" in todo:
        # ESO itself arrives with the platform layer: wait for its CRD before applying the store.
        if not wait_until(lambda: kube.has_kind(ESO_API, "ClusterSecretStore"), SYNC_TIMEOUT_S,
                          "External Secrets Operator's CRDs", run.log):
            raise NotReady("External Secrets Operator's CRDs did not appear",
                           "is the platform layer's external-secrets group enabled?")
        live = kube.get(ESO_API, "ClusterSecretStore", "secret-store")
        filled = live is not None and ((live.get("spec") or {}).get("provider") or {})
        if not (spec.store_is_placeholder and filled):
            kube.apply(spec.secret_store)

    roots = {f"{o['kind']} {o['metadata']['name']}" for o in spec.roots} | {"ClusterSecretStore secret-store"}
    if not todo & roots:
        return  # nothing Argo CD syncs changed: no Application to wait for

    def healthy():
        now = observe_platform(run, spec)
        return any(a[3] for a in now.apps) and not now.unhealthy
    if not wait_until(healthy, SYNC_TIMEOUT_S, "every automated Application Synced and Healthy", run.log):
        after = observe_platform(run, spec)
        raise NotReady(f"{ERR_NOT_HEALTHY} after {SYNC_TIMEOUT_S}s: {', '.join(after.unhealthy) or 'none exist'}",
                       "argocd app get <name> / kubectl -n argocd describe application <name>")


def write_repo_secret(run: Run, spec: PlatformSpec) -> None:
    """Argo CD's repository Secret, as `make argocd-repo` makes it; the token never leaves this function."""
    token = _repo_token(run, spec)
    if token is None:
        raise NotReady(f"the backend secret {spec.private_repo.secret} has no readable version",
                       f"add a version to {spec.private_repo.secret} in the secret backend")
    live = _repo_secret(run, spec)
    name = live["metadata"]["name"] if live else REPO_SECRET
    run.conn.kube.apply({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                         "metadata": {"name": name, "namespace": "argocd", "labels": {REPO_LABEL: "repository"}},
                         "stringData": {"type": "git", "url": spec.repo_url, "username": spec.private_repo.username,
                                        "password": token.decode().strip()}})
    run.log.info(f"wrote Argo CD repository Secret argocd/{name} for {spec.repo_url} (token not shown)")


# ---- checks -------------------------------------------------------------------------------------
def check_apps(spec: PlatformSpec, observed: PlatformObserved, env: EnvConfig) -> Outcome:
    bad = observed.unhealthy
    automated = [a for a in observed.apps if a[3]]
    ok = observed.installed and bool(automated) and not bad
    return Outcome(ok, f"{len(automated) - len(bad)}/{len(automated)} automated Applications Synced and Healthy",
                   {"not_healthy": ", ".join(bad),
                    "manual_sync": ", ".join(observed.dormant),  # the seed's dormant apps: synced by hand
                    "remedy": "" if ok else "argocd app get <name> / kubectl -n argocd describe application <name>"})


def check_store_ready(spec: PlatformSpec, observed: PlatformObserved, env: EnvConfig) -> Outcome:
    status, message = observed.store_ready
    if status == "True":
        return Outcome(True, "ClusterSecretStore secret-store is Ready: ESO can read the backend")
    if spec.store_is_placeholder:
        remedy = (f"fill spec.provider of ClusterSecretStore secret-store for your {env.secret_backend} backend "
                  f"(https://external-secrets.io/latest/provider/); gpuplat never overwrites it once filled")
    elif spec.store_from_fork and observed.secret_store == "absent":
        remedy = (f"Argo CD applies the fork's {SECRET_STORE_FILE}: check the external-secrets-config "
                  f"Application (argocd app get external-secrets-config)")
    elif env.secret_store_auth == "sa-key":
        remedy = ("kubectl -n external-secrets create secret generic secret-store-key --from-file=sa-key.json=<key "
                  "file of a service account with roles/secretmanager.secretAccessor>")
    else:
        remedy = ("materialize service_accounts and workload_identity: ESO's Google service account holds "
                  "roles/secretmanager.secretAccessor, and ESO's Kubernetes service account may act as it "
                  "(roles/iam.workloadIdentityUser); the check eso_can_read_secrets names what is missing")
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


class PlatformInstalled(Piece[PlatformSpec, PlatformObserved]):
    name = "platform_installed"
    description = ("The fork's root objects as `make root` applies them (AppProjects, per-layer ApplicationSets), "
                   "every automated Application Synced and Healthy.")
    group = "platform"
    kinds = frozenset({"kubernetes", "argocd"})
    deps = ("argocd", "workload_identity", "gpu_stack", "storage_class", "snapshot_class", "secrets_seeded")
    owned_fields = ("the fork's AppProjects and ApplicationSets: every field their files set",
                    "ClusterSecretStore secret-store provider (only when the fork holds none)",
                    "Argo CD repository Secret (private fork)")
    checks = (Check("applications_healthy", "Every automated platform Application is Synced and Healthy (manual-sync "
                    "ones are listed, not required).", check_apps),
              Check("secret_store_ready", "ESO reports the ClusterSecretStore secret-store Ready: it can read the "
                    "secret backend.", check_store_ready),
              Check("ingress_addresses", "When a domain is set, every LoadBalancer Service has an external address.",
                    check_ingress))

    def desired(self, env: EnvConfig) -> PlatformSpec:
        return desired_platform(env)

    def observe(self, run: Run, spec: PlatformSpec) -> PlatformObserved:
        return observe_platform(run, spec)

    def plan(self, spec: PlatformSpec, observed: PlatformObserved) -> list[Action]:
        return plan_platform(spec, observed)

    def apply(self, run: Run, spec: PlatformSpec, observed: PlatformObserved, actions: list[Action]) -> None:
        apply_platform(run, spec, observed, actions)

    def provenance(self, spec: PlatformSpec) -> dict[str, str]:
        return provenance(spec)


PIECE = PlatformInstalled()
