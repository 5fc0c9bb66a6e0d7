"""service_accounts: the Google identities the substrate runs as, as the fork's Terraform makes them.

The node service account (`gke-<cluster>-nodes`, the fork's `node_service_account_id`) with the
fork's node roles: both node pools run as it. External Secrets Operator's Google service account
(named by the Workload Identity annotation in the fork's ESO values; `external-secrets` by default)
with `roles/secretmanager.secretAccessor`. Its Workload Identity binding needs the cluster's identity
pool, so it is `workload_identity`'s, after `cluster`.

Project IAM is changed by read-modify-write with the policy's etag: only these members are added,
nobody else's binding is touched or rewritten. A member gpuplat added and someone removed is drift.
"""

from __future__ import annotations

from dataclasses import dataclass

from resources.iam import account_known

from .config import EnvConfig
from .fork import Fork
from .piece import Check, Outcome, Piece, Run
from .plan import Action

# The fork's local.node_roles (infra/gke/terraform/main.tf).
NODE_ROLES = ("roles/logging.logWriter", "roles/monitoring.metricWriter", "roles/monitoring.viewer",
              "roles/stackdriver.resourceMetadata.writer")
SECRET_ACCESSOR = "roles/secretmanager.secretAccessor"
ESO_ACCOUNT_ID = "external-secrets"  # the fork's external_secrets_service_account_id
SA_DOMAIN = "iam.gserviceaccount.com"


@dataclass(frozen=True)
class Account:
    account_id: str
    display_name: str
    email: str


@dataclass(frozen=True)
class AccountsSpec:
    project: str
    accounts: tuple[Account, ...]  # the ones gpuplat creates when absent
    bindings: tuple[tuple[str, str], ...]  # project (role, member) pairs gpuplat adds
    problems: tuple[str, ...] = ()  # what the config or fork asks that gpuplat must not do


@dataclass(frozen=True)
class AccountsObserved:
    applies: bool
    existing: tuple[str, ...] = ()  # emails
    missing_bindings: tuple[tuple[str, str], ...] = ()

    def owned(self) -> dict:
        return {"applies": self.applies, "existing": list(self.existing),
                "missing_bindings": [list(b) for b in self.missing_bindings]}


# ---- desired ------------------------------------------------------------------------------------
def node_account_id(cluster: str) -> str:
    """`gke-<cluster>-nodes`, cut to IAM's 30 characters (a long cluster name keeps its start)."""
    return f"gke-{cluster[:20].rstrip('-')}-nodes"


def node_service_account(env: EnvConfig) -> str:
    """The email both node pools run as; "" for Compute Engine's default (`node_service_account: default`)."""
    given = env.substrate.node_service_account
    if given == "default":
        return ""
    return given or f"{node_account_id(env.cluster.name)}@{env.cluster.projectID}.{SA_DOMAIN}"


def eso_service_account(env: EnvConfig) -> str:
    """ESO's Google service account: the fork's Workload Identity annotation, else external-secrets@<project>."""
    return Fork.of(env).eso_service_account() or f"{ESO_ACCOUNT_ID}@{env.cluster.projectID}.{SA_DOMAIN}"


def uses_workload_identity(env: EnvConfig) -> bool:
    return env.is_gke and env.secret_backend == "gcpsm" and env.secret_store_auth == "workload-identity"


def desired_accounts(env: EnvConfig) -> AccountsSpec | None:
    if not env.is_gke:
        return None
    project, own = env.cluster.projectID, f"@{env.cluster.projectID}.{SA_DOMAIN}"
    accounts, bindings, problems = [], [], []
    node = node_service_account(env)
    if node:
        bindings += [(role, f"serviceAccount:{node}") for role in NODE_ROLES]
        if node.endswith(own):
            accounts.append(Account(node.split("@")[0], f"GKE nodes for {env.cluster.name}", node))
    if uses_workload_identity(env):
        eso = eso_service_account(env)
        if not eso.endswith(own):
            problems.append(f"the fork's ESO values name {eso}, an account outside project {project}")
        else:
            accounts.append(Account(eso.split("@")[0], "External Secrets Operator", eso))
            bindings.append((SECRET_ACCESSOR, f"serviceAccount:{eso}"))
    return AccountsSpec(project, tuple(accounts), tuple(bindings), tuple(problems))


# ---- observe ------------------------------------------------------------------------------------
def observe_accounts(run: Run, spec: AccountsSpec | None) -> AccountsObserved:
    if spec is None:
        return AccountsObserved(False)
    iam = run.conn.iam
    existing = tuple(a.email for a in spec.accounts if account_known(iam, a.email))
    policy = iam.policy(iam.project_resource())
    missing = tuple((role, m) for role, m in spec.bindings if m not in policy.get(role, ()))
    return AccountsObserved(True, existing, missing)


# ---- plan ---------------------------------------------------------------------------------------
def plan_accounts(spec: AccountsSpec | None, observed: AccountsObserved) -> list[Action]:
    if spec is None:
        return []
    actions = [Action("cannot-fix", "ESO service account", observed=p,
                      remedy="annotate ESO with an account of this project (platform/external-secrets/values.yaml) "
                             "or grant that account yourself") for p in spec.problems]
    actions += [Action("create", f"service account {a.email}", desired=a.display_name, args={"account": a})
                for a in spec.accounts if a.email not in observed.existing]
    for role, member in observed.missing_bindings:
        actions.append(Action("update", f"project {spec.project} IAM", role, desired=f"+ {member}",
                              observed="absent", args={"binding": (role, member)}))
    return actions


# ---- apply --------------------------------------------------------------------------------------
def apply_accounts(run: Run, spec: AccountsSpec, observed: AccountsObserved, actions: list[Action]) -> None:
    iam = run.conn.iam
    for a in actions:
        if a.kind == "create":
            account = a.args["account"]
            iam.create_account(account.account_id, account.display_name)
            run.log.info(f"created service account {account.email}")
    wanted = [a.args["binding"] for a in actions if "binding" in a.args]
    if wanted:
        added = iam.add_members(iam.project_resource(), wanted)
        run.log.info(f"project {spec.project} IAM: added {added} member(s), every other binding kept")


# ---- checks -------------------------------------------------------------------------------------
def check_accounts(spec: AccountsSpec | None, observed: AccountsObserved, env: EnvConfig) -> Outcome:
    if spec is None:
        return Outcome(True, f"substrate {env.substrate.kind}: no Google service accounts apply")
    absent = [a.email for a in spec.accounts if a.email not in observed.existing]
    roles = [f"{r} for {m.split(':', 1)[1]}" for r, m in observed.missing_bindings]
    ok = not absent and not roles and not spec.problems
    return Outcome(ok, "the node and ESO service accounts exist with their project roles" if ok else
                   f"{len(absent)} account(s) absent, {len(roles)} project role(s) missing",
                   {"absent": ", ".join(absent), "missing_roles": "; ".join(roles), "problems": "; ".join(spec.problems),
                    "remedy": "" if ok else "materialize service_accounts (it creates and grants, adding only its "
                                           "own members)"})


class ServiceAccounts(Piece[AccountsSpec | None, AccountsObserved]):
    name = "service_accounts"
    description = ("The node service account with the fork's node roles, and ESO's Google service account with "
                   "secretAccessor, as the fork's Terraform makes them.")
    group = "cloud"
    kinds = frozenset({"gcp", "iam"})
    deps = ("apis_enabled",)
    owned_fields = ("service accounts gke-<cluster>-nodes and ESO's (existence)",
                    "project IAM: the node roles and secretAccessor for those accounts (members added, never removed)")
    checks = (Check("service_accounts_granted", "The node and ESO service accounts exist and hold their project roles.",
                    check_accounts),)

    def desired(self, env: EnvConfig) -> AccountsSpec | None:
        return desired_accounts(env)

    def observe(self, run: Run, spec: AccountsSpec | None) -> AccountsObserved:
        return observe_accounts(run, spec)

    def plan(self, spec: AccountsSpec | None, observed: AccountsObserved) -> list[Action]:
        return plan_accounts(spec, observed)

    def apply(self, run: Run, spec: AccountsSpec | None, observed: AccountsObserved, actions: list[Action]) -> None:
        apply_accounts(run, spec, observed, actions)

    def links(self, env: EnvConfig, observed: AccountsObserved) -> dict[str, str]:
        return ({"console": f"https://console.cloud.google.com/iam-admin/serviceaccounts?project="
                           f"{env.cluster.projectID}"} if env.is_gke else {})

    def keeps_when_paused(self, env: EnvConfig) -> bool:
        return True


PIECE = ServiceAccounts()
