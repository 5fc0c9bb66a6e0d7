"""cluster: the Kubernetes cluster itself; on GKE created through Google's API, elsewhere verified."""

from __future__ import annotations

from dataclasses import dataclass

from resources import ERR_NOT_RUNNING
from resources.errors import KubeError, KubeUnreachable
from resources.models import GKE_BUSY, ClusterSpec, ClusterState, NodePoolSpec

from . import pause
from .config import EnvConfig
from .gke_ops import CLUSTER_TIMEOUT_S, after_operations_in_flight
from .piece import Check, Outcome, Piece, Run, Steps
from .plan import Action
from .prices import running_cost
from .service_accounts import node_service_account

# What each substrate's nodes carry in spec.providerID; a mismatch means the kubeconfig points elsewhere.
PROVIDER_SCHEMES = {"gke": ("gce",), "hetzner": ("hcloud", "hrobot"), "byo": ()}


@dataclass(frozen=True)
class KubeFacts:
    kubeconfig: str = ""
    context: str = ""
    server: str = ""
    server_version: str = ""
    node_count: int = 0
    provider_schemes: tuple[str, ...] = ()
    error: str = ""
    kube_system_uid: str = ""  # with the server, which cluster this is (recorded, never drift)
    remedy: str = ""  # what the error's class says to do (never part of owned())


@dataclass(frozen=True)
class ClusterObserved:
    gke: ClusterState | None
    kube: KubeFacts
    # What a pause that stopped before deleting the cluster scaled to 0 and that is still at 0: resume
    # gives it back (its record says to how many replicas).
    scaled_down: tuple[pause.Scaled, ...] = ()

    def owned(self) -> dict:
        out: dict = {"scaled_down": [f"{s.kind} {s.namespace}/{s.name}" for s in self.scaled_down]}
        if self.gke is not None:
            g = self.gke
            cpu = g.node_pools
            out["gke"] = {"status": g.status, "release_channel": g.release_channel, "workload_pool": g.workload_pool,
                          "vpc_native": g.vpc_native, "datapath_provider": g.datapath_provider,
                          "pools": sorted(p.name for p in cpu)}
        # Node counts belong to the autoscaler: recorded, never part of the fingerprint.
        out["kube"] = {"server": self.kube.server, "context": self.kube.context,
                       "provider_schemes": list(self.kube.provider_schemes), "error": self.kube.error}
        return out


# ---- desired ------------------------------------------------------------------------------------
def desired_cluster(env: EnvConfig) -> ClusterSpec | None:
    if not env.is_gke:
        return None
    cpu = env.substrate.cpu_pool
    return ClusterSpec(
        name=env.cluster.name, location=env.cluster.location, release_channel=env.substrate.release_channel,
        workload_pool=f"{env.cluster.projectID}.svc.id.goog", datapath_provider="ADVANCED_DATAPATH",
        vpc_native=True,
        cpu_pool=NodePoolSpec(name=cpu.name, machine_type=cpu.machine_type, min_nodes=cpu.min, max_nodes=cpu.max,
                              service_account=node_service_account(env)))


# ---- observe ------------------------------------------------------------------------------------
def observe_kube(run: Run, control_plane_version: str = "") -> KubeFacts:
    """`control_plane_version`: on GKE, the version GKE reports its control plane runs
    (currentMasterVersion), so the API server's /version is not asked again; elsewhere it is."""
    kubeconfig = str(run.conn.kubeconfig_path)
    try:
        kube = run.conn.kube  # proves the target is this environment's cluster before any call goes there
        t = kube.target
        run.log.info(f"kube target: kubeconfig {t.kubeconfig}, context {t.context}, server {t.server}")
        version = control_plane_version or kube.server_info().git_version
        nodes = kube.nodes()
        # Off GKE the identity is recorded and compared; on GKE, GKE's endpoint and CA already say it.
        uid = "" if run.env.is_gke else kube.identity().kube_system_uid
    except KubeUnreachable as exc:
        return KubeFacts(kubeconfig=t.kubeconfig, context=t.context, server=t.server, error=str(exc), remedy=exc.remedy)
    except KubeError as exc:  # no kubeconfig, another cluster's, no token: nothing was sent anywhere
        return KubeFacts(kubeconfig=kubeconfig, error=str(exc), remedy=exc.remedy)
    schemes = sorted({n.provider_id.split("://", 1)[0] for n in nodes if "://" in n.provider_id})
    return KubeFacts(t.kubeconfig, t.context, t.server, version, len(nodes), tuple(schemes),
                     kube_system_uid=uid)


def observe_cluster(run: Run, spec: ClusterSpec | None) -> ClusterObserved:
    if spec is None:
        return ClusterObserved(None, observe_kube(run))
    state = run.conn.google.get_cluster(spec.location, spec.name)
    if state is None or state.status != "RUNNING":
        return ClusterObserved(state, KubeFacts(error=NOT_RUNNING, remedy=NOT_RUNNING_REMEDY))
    kube = observe_kube(run, state.master_version)
    return ClusterObserved(state, kube, () if kube.error else pause.still_scaled_down(run))


# ---- plan ---------------------------------------------------------------------------------------
def plan_cluster(spec: ClusterSpec | None, observed: ClusterObserved) -> list[Action]:
    if spec is None:
        if observed.kube.error:
            return [Action("cannot-fix", "kubeconfig", observed.kube.kubeconfig, observed=observed.kube.error,
                           remedy=kube_remedy(observed.kube))]
        return []
    g = observed.gke
    target = f"GKE cluster {spec.name}"
    if g is None:
        return [Action("create", target, desired=f"{spec.location}, {spec.release_channel}, CPU pool "
                       f"{spec.cpu_pool.machine_type} {spec.cpu_pool.min_nodes}..{spec.cpu_pool.max_nodes}",
                       needs_approval=True)]
    if g.status in GKE_BUSY:
        # Recorded and waited on, never updated mid-operation (GKE would refuse it anyway).
        return [Action("wait", target, "status", observed=g.status, desired="RUNNING")]
    if g.status in ("ERROR", "DEGRADED"):
        return [Action("cannot-fix", target, "status", observed=f"{g.status}: {cluster_trouble(g)}",
                       remedy=ERROR_REMEDIES[g.status])]
    actions: list[Action] = []
    immutable = (("vpc_native", spec.vpc_native, g.vpc_native),
                 ("datapath_provider", spec.datapath_provider, g.datapath_provider))
    for field, want, have in immutable:
        if want != have:
            actions.append(Action("cannot-fix", target, field, desired=want, observed=have,
                                  remedy=f"{field} is immutable: gpuplat never recreates a cluster; create a new "
                                         f"environment with another cluster.name and migrate"))
    if g.release_channel != spec.release_channel:
        actions.append(Action("update", target, "release_channel", desired=spec.release_channel,
                              observed=g.release_channel))
    if g.workload_pool != spec.workload_pool:
        actions.append(Action("cannot-fix", target, "workload_pool", desired=spec.workload_pool,
                              observed=g.workload_pool,
                              remedy=f"gcloud container clusters update {spec.name} --location {spec.location} "
                                     f"--workload-pool={spec.workload_pool}"))
    pool = g.pool(spec.cpu_pool.name)
    cpu = spec.cpu_pool
    if pool is None:
        actions.append(Action("create", f"node pool {cpu.name}", desired=f"{cpu.machine_type} {cpu.min_nodes}..{cpu.max_nodes}",
                              needs_approval=True, args={"pool": cpu}))
    else:
        if pool.machine_type != cpu.machine_type:
            actions.append(Action("cannot-fix", f"node pool {cpu.name}", "machine_type", desired=cpu.machine_type,
                                  observed=pool.machine_type,
                                  remedy="a pool's machine type is immutable: set substrate.cpu_pool.name to a new "
                                         "pool name (gpuplat creates it, with approval) and delete the old pool yourself"))
        have = (pool.autoscaling_enabled, pool.min_nodes, pool.max_nodes)
        if have != (True, cpu.min_nodes, cpu.max_nodes):
            actions.append(Action("update", f"node pool {cpu.name}", "autoscaling",
                                  desired={"enabled": True, "min": cpu.min_nodes, "max": cpu.max_nodes},
                                  observed={"enabled": have[0], "min": have[1], "max": have[2]}))
    actions += [Action("update", f"{s.kind} {s.namespace}/{s.name}", "replicas", desired=s.replicas, observed=0,
                       remedy="scaled to 0 by a pause that stopped before deleting the cluster", args={"scaled": s})
                for s in observed.scaled_down]
    return actions


# cluster_service.proto: ERROR "indicates the cluster is unusable. It will be automatically deleted";
# DEGRADED "requires user action to restore full functionality". Neither is fixed by materializing.
ERROR_REMEDIES = {
    "ERROR": "GKE deletes a cluster in ERROR by itself; read the reason, fix it (a stockout: another zone in "
             "cluster.location; quota: request an increase), and once `gcloud container clusters list` no longer "
             "shows the cluster, materialize cluster to create it again (with approval)",
    "DEGRADED": "GKE needs a person: the reason names what (a deleted node service account: materialize "
                "service_accounts; missing permissions of it: its roles); gpuplat changes nothing until it is RUNNING",
}


def cluster_trouble(g: ClusterState) -> str:
    return g.status_message or "; ".join(f"{code}: {message}" for code, message in g.conditions) or "no reason given"


NOT_RUNNING = ERR_NOT_RUNNING
NOT_RUNNING_REMEDY = "materialize cluster: the GKE cluster does not exist or is still being created"


def kube_remedy(kube: KubeFacts) -> str:
    return kube.remedy or f"check that {kube.server or 'the API server'} is reachable from this host"


# ---- apply --------------------------------------------------------------------------------------
def apply_cluster(run: Run, spec: ClusterSpec | None, observed: ClusterObserved, actions: list[Action]) -> None:
    if spec is None:
        return
    g = run.conn.google
    observed, actions = after_operations_in_flight(run, spec.location, spec, observed, actions, observe_cluster, plan_cluster)
    for a in actions:
        if a.kind == "create" and a.target.startswith("GKE cluster"):
            run.log.info(f"creating GKE cluster {spec.name} in {spec.location}")
            op = g.create_cluster(spec)
            g.wait_operation(op, CLUSTER_TIMEOUT_S, run.progress(f"creating cluster {spec.name}"))
        elif a.kind == "create":
            op = g.create_node_pool(spec.location, spec.name, a.args["pool"])
            g.wait_operation(op, CLUSTER_TIMEOUT_S, run.progress(f"creating node pool {a.args['pool'].name}"))
        elif a.field == "release_channel":
            op = g.update_cluster(spec.location, spec.name, release_channel=spec.release_channel)
            g.wait_operation(op, CLUSTER_TIMEOUT_S, run.progress("updating the release channel"))
        elif a.field == "autoscaling":
            cpu = spec.cpu_pool
            op = g.set_node_pool_autoscaling(spec.location, spec.name, cpu.name, cpu.min_nodes, cpu.max_nodes)
            g.wait_operation(op, CLUSTER_TIMEOUT_S, run.progress(f"setting autoscaling of {cpu.name}"))
    restored = [a.args["scaled"] for a in actions if a.field == "replicas"]
    if restored:
        pause.give_back(run, restored)


def cluster_cost(run: Run, spec: ClusterSpec | None, observed: ClusterObserved) -> dict:
    """What the running environment costs now (GKE fee, nodes, its PVCs' disks), from the Billing Catalog."""
    if spec is None or observed.gke is None or observed.gke.status != "RUNNING":
        return {}
    mine = {(x.kind, x.scope, x.name) for x in pause.volume_disks(run.conn.kube)}
    # The project's disks are listed only to price this environment's volumes: without a volume, no
    # listing (and no Compute Engine client, the heaviest of the Google libraries to import).
    disks = [x for x in run.conn.google.leftovers() if (x.kind, x.scope, x.name) in mine] if mine else []
    return running_cost(run, spec.location.count("-") == 2, disks)


# ---- checks -------------------------------------------------------------------------------------
def check_running(spec: ClusterSpec | None, observed: ClusterObserved, env: EnvConfig) -> Outcome:
    return Outcome(True, "lifecycle running: nothing is expected to be torn down")


def check_target(spec: ClusterSpec | None, observed: ClusterObserved, env: EnvConfig) -> Outcome:
    k = observed.kube
    meta = {"kubeconfig": k.kubeconfig, "context": k.context, "server": k.server,
            "server_version": k.server_version, "nodes": k.node_count,
            "provider_schemes": ", ".join(k.provider_schemes)}
    if k.error:
        return Outcome(False, f"kube target unreachable: {k.error}", {**meta, "remedy": kube_remedy(k)})
    expected = PROVIDER_SCHEMES[env.substrate.kind]
    foreign = [s for s in k.provider_schemes if expected and s not in expected]
    if env.substrate.kind == "byo":
        foreign = [s for s in k.provider_schemes if s == "gce"]  # a GKE node under a byo config: wrong kubeconfig?
    if foreign:
        return Outcome(False, f"nodes report providerID {', '.join(foreign)}:// but the environment's substrate is "
                              f"{env.substrate.kind}: the kubeconfig points at another cluster",
                       {**meta, "expected": ", ".join(expected) or "(not GKE)",
                        "remedy": f"fix {k.kubeconfig} to point at the {env.substrate.kind} cluster, or correct "
                                  f"substrate.kind in {env.path}"})
    return Outcome(True, f"reachable: {k.server} ({k.server_version}), {k.node_count} nodes", meta)


class Cluster(Piece[ClusterSpec | None, ClusterObserved]):
    name = "cluster"
    description = "The Kubernetes cluster: on GKE created (VPC-native, Workload Identity, Dataplane V2, CPU pool); elsewhere verified."
    group = "cluster"
    kinds = frozenset({"gke", "kubernetes"})
    deps = ("apis_enabled", "service_accounts")
    owned_fields = ("release_channel", "workload_pool", "vpc_native", "datapath_provider", "cpu pool machine type",
                    "cpu pool autoscaling")
    checks = (Check("kube_target_reachable", "The environment's own kubeconfig reaches the cluster and its nodes' "
                    "providerID matches the configured substrate.", check_target, blocking=True),
              Check("paused_costs_nothing", "With lifecycle: paused, no cluster, node pool, PVC-backed disk, forwarding "
                    "rule or reserved address of the environment remains; each leftover is named with its cost per "
                    "hour (running: passes).", check_running))

    def desired(self, env: EnvConfig) -> ClusterSpec | None:
        return desired_cluster(env)

    def observe(self, run: Run, spec: ClusterSpec | None) -> ClusterObserved:
        return observe_cluster(run, spec)

    def plan(self, spec: ClusterSpec | None, observed: ClusterObserved) -> list[Action]:
        return plan_cluster(spec, observed)

    def apply(self, run: Run, spec: ClusterSpec | None, observed: ClusterObserved, actions: list[Action]) -> None:
        apply_cluster(run, spec, observed, actions)

    def links(self, env: EnvConfig, observed: ClusterObserved) -> dict[str, str]:
        return ({"console": f"https://console.cloud.google.com/kubernetes/clusters/details/"
                            f"{env.cluster.location}/{env.cluster.name}/details?project={env.cluster.projectID}"}
                if env.is_gke else {})

    def record(self, env: EnvConfig, observed: ClusterObserved) -> dict:
        return ({"kube_identity": {"server": observed.kube.server, "kube_system_uid": observed.kube.kube_system_uid}}
                if not env.is_gke and observed.kube.kube_system_uid else {})

    def report(self, run: Run, spec: ClusterSpec | None, observed: ClusterObserved) -> dict:
        return cluster_cost(run, spec, observed)

    def paused_steps(self, env: EnvConfig) -> Steps:
        return pause.PAUSE


PIECE = Cluster()
