"""Pause to $0: the seed's `make pause` (scripts/pause.sh) as the `cluster` asset's plan when the
environment says `lifecycle: paused`, and the orphan audit that proves it.

The order is the seed's, for the seed's reasons: suspend Argo CD (its selfHeal would recreate the
Gateways), delete the Gateways (their controller releases the load balancers), wait for their
forwarding rules and addresses to clear (a load balancer left behind is billed), clear the
PodDisruptionBudgets that would hang the node pools' drain (CloudNativePG's, after stopping its
operator, which recreates them), delete the node pools and the cluster, and delete the environment's
disks left behind. Every step is a `delete` action: it runs only with the destroy approval, never from
a sensor.

A GCP project is shared by environments and by clusters gpuplat never made, so a pause touches only
what it can prove is its own, never a project-wide name pattern (the seed's `name~pvc` would take a
neighbour's disks, a live volume's among them). While the cluster still answers, the pause reads what
belongs to it from its own objects: the disk behind each PersistentVolume of the PD CSI driver
(`spec.csi.volumeHandle` is `projects/<p>/zones/<z>/disks/<name>`, the driver's volIDZonalFmt), and the
forwarding rules and addresses GKE's Gateway controller names in each Gateway's annotations
(`networking.gke.io/forwarding-rules`, `networking.gke.io/addresses`). Before it changes anything it
records that, and what it scales down, as an observation of this environment's `cluster` (the "pause
record"); a pause stopped half-way, or resumed, reads the record back. Only the recorded resources
are deleted, waited for and audited. Resume (`lifecycle: running`) restores what the record says the
pause scaled down (cluster.py), and `in_sync` fails until it has.

Kept on purpose, and priced by the audit when they bill: Secret Manager's secrets (resume reuses them:
ESO re-materializes the same values), the service accounts and ESO's Workload Identity binding (free),
the model registry (billed only for the images stored in it).
"""

from __future__ import annotations

from dataclasses import dataclass

from resources.errors import GpuplatError
from resources.models import GKE_BUSY, Leftover

from .config import EnvConfig
from .history import CLUSTER
from .gke_ops import CLUSTER_TIMEOUT_S, wait_running_operations
from .piece import Check, Outcome, Run, Steps, wait_until
from .plan import Action
from .prices import leftover_price
from .model_registry import desired_registry
from .secrets_seeded import desired_secrets

ARGO_CONTROLLERS = (("apps/v1", "StatefulSet", "argo-cd-argocd-application-controller"),
                    ("apps/v1", "Deployment", "argo-cd-argocd-applicationset-controller"))
GATEWAY = ("gateway.networking.k8s.io/v1", "Gateway")
CNPG = ("postgresql.cnpg.io/v1", "Cluster")
PDB = ("policy/v1", "PodDisruptionBudget")
PV = ("v1", "PersistentVolume")
CNPG_NAMESPACE = "cnpg-system"
ARGO_NAMESPACE = "argocd"
LB_WAIT_S = 300.0  # pause.sh: 30 x 10 s
PD_CSI = "pd.csi.storage.gke.io"
GATEWAY_ANNOTATIONS = {"networking.gke.io/forwarding-rules": "forwarding rule",
                       "networking.gke.io/addresses": "address"}
RECORD = "pause_record"
PAUSED_CHECK = "paused_costs_nothing"


@dataclass(frozen=True)
class PauseSpec:
    project: str
    location: str
    cluster: str
    env_name: str


@dataclass(frozen=True)
class Scaled:
    """A workload the pause scaled to 0, and the replicas it had: what resume gives back."""

    api_version: str
    kind: str
    namespace: str
    name: str
    replicas: int

    def as_json(self) -> dict:
        return {"apiVersion": self.api_version, "kind": self.kind, "namespace": self.namespace, "name": self.name,
                "replicas": self.replicas}

    @classmethod
    def from_json(cls, d: dict) -> "Scaled":
        return cls(d["apiVersion"], d["kind"], d["namespace"], d["name"], int(d["replicas"]))


@dataclass(frozen=True)
class PauseObserved:
    cluster_status: str  # "ABSENT" or GKE's status
    pools: tuple[str, ...] = ()
    controllers: tuple[str, ...] = ()  # Argo CD controllers still running
    gateways: tuple[str, ...] = ()
    cnpg_clusters: tuple[str, ...] = ()
    pdbs: tuple[str, ...] = ()
    # What provably belongs to this environment (its volumes' disks, its Gateways' load balancers), and
    # of that what still exists in the project.
    mine: tuple[Leftover, ...] = ()
    leftovers: tuple[Leftover, ...] = ()
    # What each leftover costs per hour (None: unknown), in `currency`; never part of owned().
    leftover_prices: tuple[float | None, ...] = ()
    currency: str = ""
    scaled: tuple[Scaled, ...] = ()  # what to give back on resume (recorded before scaling)
    recorded: bool = False  # a pause record exists for this environment
    kept: tuple[str, ...] = ()  # what the pause keeps on purpose that still bills, priced, with the remedy

    def owned(self) -> dict:
        return {"cluster": self.cluster_status, "pools": list(self.pools), "leftovers": [
            f"{x.kind} {x.scope}/{x.name}" for x in self.leftovers]}


def _key(x: Leftover) -> tuple[str, str, str]:
    return (x.kind, x.scope, x.name)


def record_of(run: Run) -> dict:
    """The pause record of this environment ({} when it was never paused)."""
    value = run.recall(CLUSTER, RECORD)
    return value if isinstance(value, dict) else {}


def remember_record(run: Run, mine, scaled) -> None:
    run.remember(CLUSTER, RECORD, {"owned": [{"kind": x.kind, "name": x.name, "scope": x.scope} for x in mine],
                                   "scaled": [s.as_json() for s in scaled]})


def still_scaled_down(run: Run) -> tuple[Scaled, ...]:
    """What the pause record says was scaled to 0 and still is (a pause that stopped before the cluster went)."""
    out = []
    for s in (Scaled.from_json(d) for d in record_of(run).get("scaled") or []):
        live = run.conn.kube.get(s.api_version, s.kind, s.name, s.namespace)
        if live is not None and not int(((live.get("spec") or {}).get("replicas")) or 0):
            out.append(s)
    return tuple(out)


def give_back(run: Run, scaled: list[Scaled]) -> None:
    """Resume: each workload the pause scaled down gets its replicas back, then the record forgets them."""
    for s in scaled:
        run.log.info(f"giving {s.kind} {s.namespace}/{s.name} back its {s.replicas} replica(s), scaled to 0 by a pause")
        run.conn.kube.merge_patch(s.api_version, s.kind, s.name, {"spec": {"replicas": s.replicas}}, s.namespace)
    record = record_of(run)
    remember_record(run, recorded_leftovers(record), [])


def recorded_leftovers(record: dict) -> tuple[Leftover, ...]:
    return tuple(Leftover(d["kind"], d["name"], d["scope"]) for d in record.get("owned") or [])


# ---- desired ------------------------------------------------------------------------------------
def desired_pause(env: EnvConfig) -> PauseSpec:
    return PauseSpec(env.cluster.projectID, env.cluster.location, env.cluster.name, env.name)


# ---- observe ------------------------------------------------------------------------------------
def volume_disks(kube) -> list[Leftover]:
    """The disks behind the cluster's PersistentVolumes of the PD CSI driver (bound, released or retained)."""
    out = []
    for pv in kube.list(*PV):
        csi = (pv.get("spec") or {}).get("csi") or {}
        parts = str(csi.get("volumeHandle") or "").split("/")
        if csi.get("driver") == PD_CSI and len(parts) == 6 and parts[0] == "projects" and parts[4] == "disks":
            out.append(Leftover("disk", parts[5], f"{parts[2]}/{parts[3]}"))
    return out


def gateway_load_balancers(kube) -> list[Leftover]:
    """The forwarding rules and addresses GKE's Gateway controller made for the cluster's Gateways, as each
    Gateway's own annotations name them (`/projects/<n>/global/forwardingRules/<name>`, comma-separated)."""
    out = []
    for gw in kube.list(*GATEWAY):
        annotations = (gw.get("metadata") or {}).get("annotations") or {}
        for annotation, kind in GATEWAY_ANNOTATIONS.items():
            for link in filter(None, (p.strip() for p in str(annotations.get(annotation) or "").split(","))):
                parts = link.strip("/").split("/")
                if len(parts) >= 4 and parts[0] == "projects":
                    scope = parts[2] if parts[2] == "global" else f"{parts[2]}/{parts[3]}"
                    out.append(Leftover(kind, parts[-1], scope))
    return out


def _replicas(kube, api: str, kind: str, name: str, namespace: str) -> int:
    return int(((kube.get(api, kind, name, namespace) or {}).get("spec") or {}).get("replicas") or 0)


def observe_pause(run: Run, spec: PauseSpec) -> PauseObserved:
    g = run.conn.google
    cluster = g.get_cluster(spec.location, spec.cluster)
    record = record_of(run)
    owned = {_key(x): x for x in recorded_leftovers(record)}
    scaled = tuple(Scaled.from_json(d) for d in record.get("scaled") or [])
    state = dict(cluster_status="ABSENT" if cluster is None else cluster.status,
                 pools=tuple(p.name for p in cluster.node_pools) if cluster else (), scaled=scaled,
                 recorded=bool(record))
    if cluster is not None and cluster.status == "RUNNING":
        kube = run.conn.kube
        for x in (*volume_disks(kube), *gateway_load_balancers(kube)):
            owned.setdefault(_key(x), x)
        state.update(controllers=tuple(name for api, kind, name in ARGO_CONTROLLERS
                                       if _replicas(kube, api, kind, name, ARGO_NAMESPACE)),
                     gateways=_names(kube, *GATEWAY), cnpg_clusters=_names(kube, *CNPG), pdbs=_names(kube, *PDB))
    present = {_key(x): x for x in g.leftovers()} if owned else {}
    leftovers = tuple(present[k] for k in sorted(owned) if k in present)
    priced = [leftover_price(run, x) for x in leftovers]
    return PauseObserved(**state, mine=tuple(owned[k] for k in sorted(owned)), leftovers=leftovers,
                         leftover_prices=tuple(p for p, _ in priced),
                         currency=next((c for _, c in priced if c), ""),
                         kept=kept_costs(run, spec) if state["cluster_status"] == "ABSENT" else ())


# Published prices of what the pause keeps (list prices, USD; the Billing Catalog has no SKU gpuplat
# can match for them by words): https://cloud.google.com/secret-manager/pricing (an active secret version
# is 0.06 USD a month, 6 free per billing account) and https://cloud.google.com/artifact-registry/pricing
# (storage 0.10 USD per GB-month, 0.5 GB free).
SECRET_VERSION_MONTH_USD = 0.06
REGISTRY_GB_MONTH_USD = 0.10


def kept_costs(run: Run, spec: PauseSpec) -> tuple[str, ...]:
    """What the pause keeps on purpose that can still bill, one line each with its price and what to do
    about it (gpuplat never deletes a secret: a person does, knowing resume then seeds new values)."""
    g, env = run.conn.google, run.env
    try:
        kept = sorted(set(desired_secrets(env).all_names) & g.secret_ids())
    except GpuplatError as exc:
        return (f"Secret Manager: cannot list this environment's secrets ({exc.line()})",)
    lines = []
    if kept:
        lines.append(f"{len(kept)} Secret Manager secret(s) of {env.name}, kept for resume: "
                     f"{SECRET_VERSION_MONTH_USD:.2f} USD per active version a month beyond the billing account's "
                     f"6 free (https://cloud.google.com/secret-manager/pricing); to stop it, a person deletes them "
                     f"with gcloud secrets delete (resume then seeds new values)")
    registry = desired_registry(env)
    if registry is not None:
        lines.append(f"Artifact Registry repository {registry.name} ({registry.location}), kept with its images: "
                     f"{REGISTRY_GB_MONTH_USD:.2f} USD per GB-month stored beyond 0.5 GB "
                     f"(https://cloud.google.com/artifact-registry/pricing); delete images to stop it")
    return tuple(lines)


def _names(kube, api_version: str, kind: str) -> tuple[str, ...]:
    return tuple(sorted(f"{o['metadata'].get('namespace')}/{o['metadata']['name']}"
                        for o in kube.list(api_version, kind)))


# ---- plan ---------------------------------------------------------------------------------------
def plan_pause(spec: PauseSpec, observed: PauseObserved) -> list[Action]:
    target = f"GKE cluster {spec.cluster}"
    disks = [x for x in observed.leftovers if x.kind == "disk"]
    if observed.cluster_status == "ABSENT":
        return [Action("delete", f"disk {x.name}", desired="absent", observed=x.scope,
                       remedy="this environment's volume's disk, left behind by its cluster",
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
        to_scale = [Scaled(api, kind, ARGO_NAMESPACE, name, _replicas(kube, api, kind, name, ARGO_NAMESPACE))
                    for api, kind, name in ARGO_CONTROLLERS if name in observed.controllers]
        if "PodDisruptionBudgets" in targets:
            to_scale += [Scaled("apps/v1", "Deployment", CNPG_NAMESPACE, d["metadata"]["name"],
                                int((d.get("spec") or {}).get("replicas") or 0))
                         for d in kube.list("apps/v1", "Deployment", CNPG_NAMESPACE)
                         if (d.get("spec") or {}).get("replicas")]
        scaled = {(s.kind, s.namespace, s.name): s for s in (*observed.scaled, *to_scale)}
        # Before anything changes: what is this environment's, and what resume must give back.
        remember_record(run, observed.mine, scaled.values())
        for s in to_scale:
            log.info(f"scaling {s.kind} {s.namespace}/{s.name} from {s.replicas} to 0 replicas")
            kube.merge_patch(s.api_version, s.kind, s.name, {"spec": {"replicas": 0}}, s.namespace)
        if "Gateways" in targets:
            lbs = {_key(x) for x in observed.mine if x.kind != "disk"}
            for ref in observed.gateways:
                ns, name = ref.split("/", 1)
                log.info(f"deleting Gateway {ref}: its controller releases the load balancer")
                kube.delete(*GATEWAY, name, ns)
            cleared = wait_until(lambda: not lbs & {_key(x) for x in g.leftovers()}, LB_WAIT_S,
                                 "this environment's forwarding rules and addresses to clear", log, interval=10.0)
            if not cleared:
                log.warning("this environment's forwarding rules or addresses still exist after its Gateways went: "
                            "paused_costs_nothing names them")
        if "PodDisruptionBudgets" in targets:
            for ref in observed.cnpg_clusters:
                ns, name = ref.split("/", 1)
                kube.merge_patch(*CNPG, name, {"metadata": {"finalizers": None}}, ns)
                kube.delete(*CNPG, name, ns)
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
        if observed.cluster_status == "RUNNING" or observed.scaled:
            # What was scaled down went with the cluster: a resume builds it anew and has nothing to give back.
            remember_record(run, observed.mine, [])
    # Only this environment's disks: those its own volumes named, whether seen now or recorded before.
    disks = {_key(x) for x in observed.mine if x.kind == "disk"}
    for x in (x for x in g.leftovers() if _key(x) in disks):
        if x.scope.startswith("zones/"):
            log.info(f"deleting disk {x.name} ({x.scope}), this environment's volume left behind by its cluster")
            g.delete_disk(x.scope.split("/", 1)[1], x.name)


# ---- checks -------------------------------------------------------------------------------------
def check_paused_costs_nothing(spec: PauseSpec, observed: PauseObserved, env: EnvConfig) -> Outcome:
    left = [f"GKE cluster {spec.cluster} ({observed.cluster_status})"] if observed.cluster_status != "ABSENT" else []
    left += [f"node pool {p}" for p in observed.pools]
    for x, per_hour in zip(observed.leftovers, observed.leftover_prices):
        cost = f"{per_hour:.4f} {observed.currency}/h" if per_hour is not None else "price unknown"
        left.append(f"{x.kind} {x.name} ({x.scope}{f', {x.size_gb} GB' if x.size_gb else ''}: {cost})")
    kept = {"kept_on_purpose": "\n".join(observed.kept)} if observed.kept else {}
    if not observed.recorded and observed.cluster_status == "ABSENT":
        kept["record"] = ("no pause record: this environment was paused before gpuplat recorded what it owns, so "
                          "no disk or load balancer is known to be its own; gpuplat deletes and audits nothing else")
    if not left:
        return Outcome(True, "paused: no cluster, node pool, disk of this environment's volumes, or load balancer of "
                             "its Gateways remains; Secret Manager keeps the secrets", kept)
    return Outcome(False, f"{len(left)} paid leftover(s) of this environment: " + "; ".join(left),
                   {"leftovers": "\n".join(left),
                    "leftover_cost_per_hour": round(sum(p or 0.0 for p in observed.leftover_prices), 4),
                    "currency": observed.currency, **kept,
                    "remedy": "materialize cluster with the destroy approval: it deletes the cluster, its pools and "
                              "this environment's disks, and waits for its Gateways' load balancers; one that stays "
                              f"is GKE's to release (gcloud compute forwarding-rules list --project {spec.project})"})


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


PAUSE = Pause()
