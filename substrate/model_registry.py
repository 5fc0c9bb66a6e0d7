"""model_registry: the Artifact Registry DOCKER repository for OCI modelcars, readable by the nodes.

As the fork's Terraform (`google_artifact_registry_repository.modelcars` and
`node_modelcar_reader`): repository `models` (`substrate.model_registry.name`) in the cluster's
region (`.location`), format DOCKER, and `roles/artifactregistry.reader` on it for the node service
account. Created when absent, never deleted. The check `nodes_can_pull_models` looks at what kubelet
needs to pull from it: every node pool runs as that account with a scope that allows the pull.
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import EnvConfig
from .piece import Check, Outcome, Piece, Run
from .plan import Action
from .service_accounts import node_service_account

READER = "roles/artifactregistry.reader"
# Roles that include artifactregistry.repositories.downloadArtifacts, on the repository or the project.
PULL_ROLES = (READER, "roles/artifactregistry.writer", "roles/artifactregistry.repoAdmin", "roles/artifactregistry.admin",
              "roles/editor", "roles/owner")
PULL_SCOPES = ("https://www.googleapis.com/auth/cloud-platform", "https://www.googleapis.com/auth/devstorage.read_only")
DESCRIPTION = "OCI modelcars for KServe"


@dataclass(frozen=True)
class RegistrySpec:
    project: str
    location: str
    name: str
    node_account: str  # "" when the nodes run as Compute Engine's default account
    cluster: str
    cluster_location: str


@dataclass(frozen=True)
class RegistryObserved:
    applies: bool
    format: str = ""  # "" when the repository does not exist
    node_can_read: bool = False
    pools: tuple[tuple[str, str, tuple[str, ...]], ...] = ()  # (pool, service account, scopes)

    def owned(self) -> dict:
        return {"applies": self.applies, "format": self.format, "node_can_read": self.node_can_read}


# ---- desired ------------------------------------------------------------------------------------
def desired_registry(env: EnvConfig) -> RegistrySpec | None:
    reg = env.substrate.model_registry
    if not env.is_gke or not reg.enabled:
        return None
    return RegistrySpec(env.cluster.projectID, reg.location or env.region, reg.name, node_service_account(env),
                        env.cluster.name, env.cluster.location)


# ---- observe ------------------------------------------------------------------------------------
def observe_registry(run: Run, spec: RegistrySpec | None) -> RegistryObserved:
    if spec is None:
        return RegistryObserved(False)
    g, g_iam = run.conn.google, run.conn.iam
    fmt = g_iam.repository(spec.location, spec.name) or ""
    member = f"serviceAccount:{spec.node_account}"
    can_read = False
    if fmt and spec.node_account:
        on_repo = g_iam.policy(g_iam.repository_name(spec.location, spec.name))
        on_project = g_iam.policy(g_iam.project_resource())
        can_read = any(member in on_repo.get(r, ()) or member in on_project.get(r, ()) for r in PULL_ROLES)
    cluster = g.get_cluster(spec.cluster_location, spec.cluster)
    pools = tuple((p.name, p.service_account, p.oauth_scopes) for p in cluster.node_pools) if cluster else ()
    return RegistryObserved(True, fmt, can_read, pools)


# ---- plan ---------------------------------------------------------------------------------------
def plan_registry(spec: RegistrySpec | None, observed: RegistryObserved) -> list[Action]:
    if spec is None:
        return []
    target = f"Artifact Registry repository {spec.location}/{spec.name}"
    if not observed.format:
        actions = [Action("create", target, desired=f"DOCKER, {DESCRIPTION}")]
    elif observed.format != "DOCKER":
        return [Action("cannot-fix", target, "format", desired="DOCKER", observed=observed.format,
                       remedy="a repository's format is immutable: set substrate.model_registry.name to a new name")]
    else:
        actions = []
    if spec.node_account and not observed.node_can_read:
        actions.append(Action("update", f"{target} IAM", READER, desired=f"+ serviceAccount:{spec.node_account}",
                              observed="absent"))
    return actions


# ---- apply --------------------------------------------------------------------------------------
def apply_registry(run: Run, spec: RegistrySpec, observed: RegistryObserved, actions: list[Action]) -> None:
    iam = run.conn.iam
    if any(a.kind == "create" for a in actions):
        run.log.info(f"creating Artifact Registry repository {spec.name} (DOCKER) in {spec.location}")
        iam.create_repository(spec.location, spec.name, DESCRIPTION)
    if any(a.kind == "update" for a in actions):
        iam.add_members(iam.repository_name(spec.location, spec.name), [(READER, f"serviceAccount:{spec.node_account}")])


# ---- checks -------------------------------------------------------------------------------------
def check_pull(spec: RegistrySpec | None, observed: RegistryObserved, env: EnvConfig) -> Outcome:
    if spec is None:
        return Outcome(True, "no model registry in this environment (not GKE, or substrate.model_registry.enabled "
                             "is false)")
    wanted = spec.node_account or "the Compute Engine default account"
    problems = []
    if not observed.format:
        problems.append(f"repository {spec.location}/{spec.name} does not exist")
    if not spec.node_account:
        problems.append("the nodes run as Compute Engine's default account (node_service_account: default): grant it "
                        f"{READER} on the repository yourself")
    elif not observed.node_can_read:
        problems.append(f"{spec.node_account} cannot read the repository ({READER} missing)")
    for pool, account, scopes in observed.pools:
        if spec.node_account and account != spec.node_account:
            problems.append(f"pool {pool} runs as {account or 'default'}, not {spec.node_account} (a pool's service "
                            f"account is immutable: create a new pool)")
        if not set(scopes) & set(PULL_SCOPES):
            problems.append(f"pool {pool} has no scope that allows pulling (cloud-platform or devstorage.read_only)")
    if not observed.pools:
        problems.append(f"cluster {spec.cluster} has no node pools yet")
    return Outcome(not problems, "; ".join(problems) or f"every pool runs as {wanted} with a pull scope, and it can "
                   f"read {spec.location}-docker.pkg.dev/{spec.project}/{spec.name}",
                   {"remedy": "materialize model_registry (repository and reader grant)" if problems else ""})


class ModelRegistry(Piece[RegistrySpec | None, RegistryObserved]):
    name = "model_registry"
    description = ("The Artifact Registry DOCKER repository for modelcars (the fork's `models`), readable by the node "
                   "service account.")
    group = "cloud"
    kinds = frozenset({"gcp", "artifactregistry"})
    deps = ("apis_enabled", "service_accounts", "gpu_pool")
    owned_fields = ("repository existence and format", f"{READER} for the node service account on it (added, never "
                    f"removed)")
    checks = (Check("nodes_can_pull_models", "Every node pool runs as the node service account with a pull scope, and "
                    "that account can read the model repository.", check_pull),)

    def desired(self, env: EnvConfig) -> RegistrySpec | None:
        return desired_registry(env)

    def observe(self, run: Run, spec: RegistrySpec | None) -> RegistryObserved:
        return observe_registry(run, spec)

    def plan(self, spec: RegistrySpec | None, observed: RegistryObserved) -> list[Action]:
        return plan_registry(spec, observed)

    def apply(self, run: Run, spec: RegistrySpec | None, observed: RegistryObserved, actions: list[Action]) -> None:
        apply_registry(run, spec, observed, actions)

    def links(self, env: EnvConfig, observed: RegistryObserved) -> dict[str, str]:
        return ({"console": f"https://console.cloud.google.com/artifacts?project={env.cluster.projectID}"}
                if env.is_gke else {})


PIECE = ModelRegistry()
