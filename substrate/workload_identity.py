"""workload_identity: ESO's Kubernetes service account may act as its Google service account.

`roles/iam.workloadIdentityUser` on ESO's Google service account for
`serviceAccount:<project>.svc.id.goog[<namespace>/<name>]` (the fork's
`external_secrets_workload_identity`). Google refuses that member until a cluster of the project has
Workload Identity ("Identity Pool does not exist"), which is why the fork's Terraform makes it after
the cluster and why this is its own asset after `cluster`, not part of `service_accounts`.
The namespace and name are the fork's ESO chart values (`serviceAccount.name`, default
`external-secrets`, in namespace `external-secrets`).

The check `eso_can_read_secrets` follows the whole chain: the Google account exists, holds
secretAccessor, the binding exists, and once the platform installed it, ESO's own verdict on the
ClusterSecretStore is Ready.
"""

from __future__ import annotations

from dataclasses import dataclass

from resources.iam import account_known

from .config import EnvConfig
from .fork import Fork
from .piece import Check, Outcome, Piece, Run
from .plan import Action
from .service_accounts import SECRET_ACCESSOR, eso_service_account, uses_workload_identity

WI_ROLE = "roles/iam.workloadIdentityUser"
ESO_NAMESPACE = "external-secrets"
ESO_KSA = "external-secrets"


@dataclass(frozen=True)
class WorkloadIdentitySpec:
    project: str
    location: str
    cluster: str
    google_account: str
    member: str  # serviceAccount:<pool>[ns/name]


@dataclass(frozen=True)
class WorkloadIdentityObserved:
    applies: bool
    pool: str = ""  # the cluster's workload pool, "" when the cluster has none (or does not exist)
    account: bool = False
    accessor: bool = False
    binding: bool = False
    store: tuple[str, str] = ("", "")  # ClusterSecretStore Ready (True/False/"" absent), ESO's message

    def owned(self) -> dict:
        return {"applies": self.applies, "pool": self.pool, "account": self.account, "binding": self.binding}


# ---- desired ------------------------------------------------------------------------------------
def desired_wi(env: EnvConfig) -> WorkloadIdentitySpec | None:
    if not uses_workload_identity(env):
        return None
    name = Fork.of(env).eso_chart_value("serviceAccount.name") or ESO_KSA
    pool = f"{env.cluster.projectID}.svc.id.goog"
    return WorkloadIdentitySpec(env.cluster.projectID, env.cluster.location, env.cluster.name,
                                eso_service_account(env), f"serviceAccount:{pool}[{ESO_NAMESPACE}/{name}]")


# ---- observe ------------------------------------------------------------------------------------
def observe_wi(run: Run, spec: WorkloadIdentitySpec | None) -> WorkloadIdentityObserved:
    if spec is None:
        return WorkloadIdentityObserved(False)
    g, g_iam = run.conn.google, run.conn.iam
    cluster = g.get_cluster(spec.location, spec.cluster)
    pool = cluster.workload_pool if cluster is not None else ""
    account = account_known(g_iam, spec.google_account)
    accessor = f"serviceAccount:{spec.google_account}" in g_iam.policy(g_iam.project_resource()).get(SECRET_ACCESSOR, ())
    binding = account and spec.member in g_iam.policy(g_iam.account_resource(spec.google_account)).get(WI_ROLE, ())
    store = ("", "")
    if cluster is not None and cluster.status == "RUNNING":
        live = run.conn.kube.get("external-secrets.io/v1", "ClusterSecretStore", "secret-store")
        if live is not None:
            ready = next((c for c in (live.get("status") or {}).get("conditions") or [] if c.get("type") == "Ready"), {})
            store = (ready.get("status", "Unknown"), ready.get("message", ""))
    return WorkloadIdentityObserved(True, pool, account, accessor, binding, store)


# ---- plan ---------------------------------------------------------------------------------------
def plan_wi(spec: WorkloadIdentitySpec | None, observed: WorkloadIdentityObserved) -> list[Action]:
    if spec is None or observed.binding:
        return []
    target = f"service account {spec.google_account} IAM"
    if not observed.account:
        return [Action("cannot-fix", target, WI_ROLE, observed="the account does not exist",
                       remedy="materialize service_accounts")]
    if observed.pool != spec.member.split("[")[0].split(":", 1)[1]:
        return [Action("cannot-fix", target, WI_ROLE, observed=f"cluster {spec.cluster} has no Workload Identity "
                       f"pool yet ({observed.pool or 'none'})", remedy="materialize cluster (it enables Workload "
                       "Identity); Google refuses the binding until then")]
    return [Action("update", target, WI_ROLE, desired=f"+ {spec.member}", observed="absent")]


# ---- apply --------------------------------------------------------------------------------------
def apply_wi(run: Run, spec: WorkloadIdentitySpec, observed: WorkloadIdentityObserved, actions: list[Action]) -> None:
    iam = run.conn.iam
    if any(a.kind == "update" for a in actions):
        iam.add_members(iam.account_resource(spec.google_account), [(WI_ROLE, spec.member)])
        run.log.info(f"{spec.member} may now act as {spec.google_account}")


# ---- checks -------------------------------------------------------------------------------------
def check_eso_chain(spec: WorkloadIdentitySpec | None, observed: WorkloadIdentityObserved, env: EnvConfig) -> Outcome:
    if spec is None:
        return Outcome(True, f"ESO reads {env.secret_backend} without Workload Identity "
                             f"({env.secret_store_auth if env.secret_backend == 'gcpsm' else 'its own provider'})")
    missing = []
    if not observed.account:
        missing.append(f"Google service account {spec.google_account} does not exist (materialize service_accounts)")
    if not observed.accessor:
        missing.append(f"{spec.google_account} lacks {SECRET_ACCESSOR} in project {spec.project} "
                       f"(materialize service_accounts)")
    if not observed.binding:
        missing.append(f"the Workload Identity binding is missing: {WI_ROLE} for {spec.member} on "
                       f"{spec.google_account} (materialize workload_identity)")
    status, message = observed.store
    if not missing and status not in ("", "True"):
        missing.append(f"ClusterSecretStore secret-store not Ready: {message}")
    if missing:
        return Outcome(False, "; ".join(missing), {"google_account": spec.google_account, "member": spec.member})
    where = "ClusterSecretStore secret-store Ready" if status == "True" else "the store is not installed yet"
    return Outcome(True, f"{spec.member} acts as {spec.google_account}, which reads Secret Manager; {where}",
                   {"google_account": spec.google_account, "member": spec.member})


class WorkloadIdentity(Piece[WorkloadIdentitySpec | None, WorkloadIdentityObserved]):
    name = "workload_identity"
    description = ("ESO's Kubernetes service account may act as its Google service account (the Workload Identity "
                   "binding), once the cluster's identity pool exists.")
    group = "cloud"
    kinds = frozenset({"gcp", "iam"})
    deps = ("service_accounts", "cluster")
    owned_fields = (f"{WI_ROLE} for ESO's Kubernetes service account on ESO's Google service account (added, never "
                    f"removed)",)
    checks = (Check("eso_can_read_secrets", "ESO's Google service account exists, holds secretAccessor, its Workload "
                    "Identity binding exists, and ESO reports the ClusterSecretStore Ready once installed.",
                    check_eso_chain),)

    def desired(self, env: EnvConfig) -> WorkloadIdentitySpec | None:
        return desired_wi(env)

    def observe(self, run: Run, spec: WorkloadIdentitySpec | None) -> WorkloadIdentityObserved:
        return observe_wi(run, spec)

    def plan(self, spec: WorkloadIdentitySpec | None, observed: WorkloadIdentityObserved) -> list[Action]:
        return plan_wi(spec, observed)

    def apply(self, run: Run, spec: WorkloadIdentitySpec | None, observed: WorkloadIdentityObserved, actions: list[Action]) -> None:
        apply_wi(run, spec, observed, actions)


PIECE = WorkloadIdentity()
