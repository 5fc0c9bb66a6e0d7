"""Pause to $0: the seed's `make pause` (scripts/pause.sh) as the `cluster` asset's plan when the
environment says `lifecycle: paused`, and the orphan audit that proves it.

The order is the seed's, for the seed's reasons: suspend Argo CD (its selfHeal would recreate the
Gateways), delete the Gateways (their controller releases the load balancers), wait for forwarding
rules and reserved addresses to clear (a load balancer left behind is billed), clear the
PodDisruptionBudgets that would hang the node pools' drain (CloudNativePG's, after stopping its
operator, which recreates them), delete the node pools and the cluster, and delete the PVC-backed disks
left behind. Every step is a `delete` action: it runs only with the destroy approval, never from a
sensor. Secret Manager secrets are kept (resume reuses them: ESO re-materializes the same values), and
so are the service accounts and ESO's Workload Identity binding (free) and the model registry (billed
only for the images stored in it): resume finds them as they were. Forwarding rules and addresses are counted for
the whole project, as pause.sh does (one lab per project).
"""

from __future__ import annotations

from dataclasses import dataclass

from resources.models import GKE_BUSY, Leftover

from .config import EnvConfig
from .gke_ops import CLUSTER_TIMEOUT_S, wait_running_operations
from .piece import Check, Outcome, Run, Steps, wait_until
from .plan import Action
from .prices import leftover_price

ARGO_CONTROLLERS = (("apps/v1", "StatefulSet", "argo-cd-argocd-application-controller"),
                    ("apps/v1", "Deployment", "argo-cd-argocd-applicationset-controller"))
GATEWAY = ("gateway.networking.k8s.io/v1", "Gateway")
CNPG = ("postgresql.cnpg.io/v1", "Cluster")
PDB = ("policy/v1", "PodDisruptionBudget")
CNPG_NAMESPACE = "cnpg-system"
LB_WAIT_S = 300.0  # pause.sh: 30 x 10 s


@dataclass(frozen=True)
class PauseSpec:
    project: str
    location: str
    cluster: str
    env_name: str


@dataclass(frozen=True)
class PauseObserved:
    cluster_status: str  # "ABSENT" or GKE's status
    pools: tuple[str, ...] = ()
    controllers: tuple[str, ...] = ()  # Argo CD controllers still running
    gateways: tuple[str, ...] = ()
    cnpg_clusters: tuple[str, ...] = ()
    pdbs: tuple[str, ...] = ()
    leftovers: tuple[Leftover, ...] = ()
    # What each leftover costs per hour (None: unknown), in `currency`; never part of owned().
    leftover_prices: tuple[float | None, ...] = ()
    currency: str = ""

    def owned(self) -> dict:
        return {"cluster": self.cluster_status, "pools": list(self.pools), "leftovers": [
            f"{x.kind} {x.scope}/{x.name}" for x in self.leftovers]}


def tied(leftover: Leftover, spec: PauseSpec) -> bool:
    """Forwarding rules and addresses of the project; disks of its PVCs or named for the environment
    (pause.sh's `name~pvc OR name~<env>`)."""
    if leftover.kind != "disk":
        return True
    return leftover.name.startswith("pvc-") or spec.env_name in leftover.name or spec.cluster in leftover.name


# ---- desired ------------------------------------------------------------------------------------
def desired_pause(env: EnvConfig) -> PauseSpec:
    return PauseSpec(env.cluster.projectID, env.cluster.location, env.cluster.name, env.name)


# ---- observe ------------------------------------------------------------------------------------
def observe_pause(run: Run, spec: PauseSpec) -> PauseObserved:
    g = run.conn.google
    cluster = g.get_cluster(spec.location, spec.cluster)
    leftovers = tuple(x for x in g.leftovers() if tied(x, spec))
    priced = [leftover_price(run, x) for x in leftovers]
    money = dict(leftover_prices=tuple(p for p, _ in priced), currency=next((c for _, c in priced if c), ""))
    if cluster is None:
        return PauseObserved("ABSENT", leftovers=leftovers, **money)
    pools = tuple(p.name for p in cluster.node_pools)
    if cluster.status != "RUNNING":
        return PauseObserved(cluster.status, pools, leftovers=leftovers, **money)
    kube = run.conn.kube
    controllers = tuple(name for api, kind, name in ARGO_CONTROLLERS
                        if ((kube.get(api, kind, name, "argocd") or {}).get("spec") or {}).get("replicas", 0))
    return PauseObserved(cluster.status, pools, controllers, _names(kube, *GATEWAY), _names(kube, *CNPG),
                         _names(kube, *PDB), leftovers, **money)


def _names(kube, api_version: str, kind: str) -> tuple[str, ...]:
    return tuple(sorted(f"{o['metadata'].get('namespace')}/{o['metadata']['name']}"
                        for o in kube.list(api_version, kind)))


# ---- plan ---------------------------------------------------------------------------------------
def plan_pause(spec: PauseSpec, observed: PauseObserved) -> list[Action]:
    target = f"GKE cluster {spec.cluster}"
    disks = [x for x in observed.leftovers if x.kind == "disk"]
    if observed.cluster_status == "ABSENT":
        return [Action("delete", f"disk {x.name}", desired="absent", observed=x.scope,
                       remedy="a PVC's disk left behind by the cluster (pause.sh's audit deletes it)",
                       args={"leftover": x}) for x in disks]
    if observed.cluster_status in GKE_BUSY:
        return [Action("wait", target, "status", observed=observed.cluster_status, desired="ABSENT")]
    steps = []
    if observed.controllers:
        steps.append(Action("delete", "Argo CD controllers", "replicas", observed=list(observed.controllers),
                            desired=0, remedy="suspended first: selfHeal would recreate the Gateways"))
    if observed.gateways:
        steps.append(Action("delete", "Gateways", observed=list(observed.gateways), desired=[],
                            remedy="their controller releases the load balancers"))
    if observed.cnpg_clusters or observed.pdbs:
        steps.append(Action("delete", "PodDisruptionBudgets", observed=[*observed.cnpg_clusters, *observed.pdbs],
                            desired=[], remedy="a PDB allowing no disruption hangs the node pools' drain; "
                                               "CloudNativePG's Clusters go first, with their operator stopped"))
    for pool in observed.pools:
        steps.append(Action("delete", f"node pool {pool}", desired="absent", observed="RUNNING"))
    steps.append(Action("delete", target, desired="absent", observed=observed.cluster_status))
    steps += [Action("delete", f"disk {x.name}", desired="absent", observed=x.scope, args={"leftover": x})
              for x in disks]
    return steps


# ---- apply --------------------------------------------------------------------------------------
def apply_pause(run: Run, spec: PauseSpec, observed: PauseObserved, actions: list[Action],
                timeout: float = CLUSTER_TIMEOUT_S) -> None:
    g, log = run.conn.google, run.log
    if any(a.kind == "wait" for a in actions):
        wait_running_operations(run, spec.location)
        observed = observe_pause(run, spec)
        actions = plan_pause(spec, observed)
    targets = {a.target for a in actions}
    if observed.cluster_status == "RUNNING":
        kube = run.conn.kube
        if "Argo CD controllers" in targets:
            for api, kind, name in ARGO_CONTROLLERS:
                if name in observed.controllers:
                    log.info(f"suspending Argo CD: {kind} argocd/{name} to 0 replicas")
                    kube.merge_patch(api, kind, name, {"spec": {"replicas": 0}}, "argocd")
        if "Gateways" in targets:
            for ref in observed.gateways:
                ns, name = ref.split("/", 1)
                log.info(f"deleting Gateway {ref}: its controller releases the load balancer")
                kube.delete(*GATEWAY, name, ns)
            cleared = wait_until(lambda: not [x for x in g.leftovers() if x.kind != "disk"], LB_WAIT_S,
                                 "forwarding rules and addresses to clear", log, interval=10.0)
            if not cleared:
                log.warning("forwarding rules or addresses still exist after the Gateways went: paused_costs_nothing "
                            "names them")
        if "PodDisruptionBudgets" in targets:
            for ref in observed.cnpg_clusters:
                ns, name = ref.split("/", 1)
                kube.merge_patch(*CNPG, name, {"metadata": {"finalizers": None}}, ns)
                kube.delete(*CNPG, name, ns)
            for dep in kube.list("apps/v1", "Deployment", CNPG_NAMESPACE):
                kube.merge_patch("apps/v1", "Deployment", dep["metadata"]["name"], {"spec": {"replicas": 0}},
                                 CNPG_NAMESPACE)
            for ref in _names(kube, *PDB):
                ns, name = ref.split("/", 1)
                log.info(f"deleting PodDisruptionBudget {ref} so the drain cannot hang")
                kube.delete(*PDB, name, ns)
    if observed.cluster_status != "ABSENT":  # RUNNING, or ERROR / DEGRADED: no API to quiesce first
        for pool in observed.pools:
            if f"node pool {pool}" in targets:
                log.info(f"deleting node pool {pool} (GKE drains its nodes)")
                op = g.delete_node_pool(spec.location, spec.cluster, pool)
                g.wait_operation(op, timeout, run.progress(f"deleting node pool {pool}"))
        log.info(f"deleting GKE cluster {spec.cluster}")
        op = g.delete_cluster(spec.location, spec.cluster)
        g.wait_operation(op, timeout, run.progress(f"deleting cluster {spec.cluster}"))
    # The cluster's deletion may have orphaned more disks than were observed before it.
    left = observed.leftovers if observed.cluster_status == "ABSENT" else tuple(g.leftovers())
    for x in (x for x in left if x.kind == "disk" and tied(x, spec)):
        if x.scope.startswith("zones/"):
            log.info(f"deleting disk {x.name} ({x.scope}) left behind by the cluster")
            g.delete_disk(x.scope.split("/", 1)[1], x.name)


# ---- checks -------------------------------------------------------------------------------------
def check_paused_costs_nothing(spec: PauseSpec, observed: PauseObserved, env: EnvConfig) -> Outcome:
    left = [f"GKE cluster {spec.cluster} ({observed.cluster_status})"] if observed.cluster_status != "ABSENT" else []
    left += [f"node pool {p}" for p in observed.pools]
    for x, per_hour in zip(observed.leftovers, observed.leftover_prices):
        cost = f"{per_hour:.4f} {observed.currency}/h" if per_hour is not None else "price unknown"
        left.append(f"{x.kind} {x.name} ({x.scope}{f', {x.size_gb} GB' if x.size_gb else ''}: {cost})")
    if not left:
        return Outcome(True, "paused: no cluster, node pool, PVC disk, forwarding rule or address remains; "
                             "Secret Manager keeps the secrets")
    return Outcome(False, f"{len(left)} paid leftover(s): " + "; ".join(left),
                   {"leftovers": "\n".join(left),
                    "leftover_cost_per_hour": round(sum(p or 0.0 for p in observed.leftover_prices), 4),
                    "currency": observed.currency,
                    "remedy": f"materialize cluster with the destroy approval (it deletes the cluster, pools and "
                              f"PVC disks); forwarding rules and addresses: gcloud compute forwarding-rules list "
                              f"--project {spec.project} / gcloud compute addresses list, and delete what no Gateway "
                              f"or Service owns"})


class Pause(Steps[PauseSpec, PauseObserved]):
    """The `cluster` asset's steps while its environment is paused: tear down to $0, then audit."""

    def desired(self, env: EnvConfig) -> PauseSpec:
        return desired_pause(env)

    def observe(self, run: Run, spec: PauseSpec) -> PauseObserved:
        return observe_pause(run, spec)

    def plan(self, spec: PauseSpec, observed: PauseObserved) -> list[Action]:
        return plan_pause(spec, observed)

    def apply(self, run: Run, spec: PauseSpec, observed: PauseObserved, actions: list[Action]) -> None:
        apply_pause(run, spec, observed, actions)

    def evaluate(self, check: Check, spec: PauseSpec, observed: PauseObserved, env: EnvConfig) -> Outcome:
        if check.name == PAUSED_CHECK:
            return check_paused_costs_nothing(spec, observed, env)
        return Outcome(True, "paused (lifecycle: paused): no cluster is expected to answer")


PAUSED_CHECK = "paused_costs_nothing"
PAUSE = Pause()
