"""gpu_pool: the scale-to-zero GPU node pool (GKE), or the GPU nodes of a cluster gpuplat did not create."""

from __future__ import annotations

from dataclasses import dataclass

from resources.errors import Stockout
from resources.models import GKE_BUSY, NodePoolSpec, NodePoolState, Quota, ScaleUpFailure, Taint

from .gke_ops import CLUSTER_TIMEOUT_S, after_operations_in_flight
from .config import EnvConfig
from .piece import Check, Outcome, Piece, PieceError, Run
from .plan import Action
from .service_accounts import node_service_account
from .preflight import is_gpu_node
from .scale_to_zero import SCALES_TO_ZERO_CHECK, ScaleToZeroObserved, observe_scale_to_zero

GPU_TAINT = Taint("nvidia.com/gpu", "present", "NoSchedule")
ERR_STOCKOUT = "the zone has no capacity for this GPU (stockout)"
# The seed's documented fallback when L4 is stocked out in us-central1-a.
STOCKOUT_REMEDY = ("L4 is often stocked out: switch to the T4 fallback by setting substrate.gpu_pool.name (gpu-t4), "
                   "substrate.gpu_pool.machine_type (n1-standard-4) and substrate.gpu_pool.accelerator_type "
                   "(nvidia-tesla-t4), or another zone in cluster.location")


@dataclass(frozen=True)
class GpuPoolSpec:
    cluster: str
    location: str
    region: str
    pool: NodePoolSpec | None  # None off GKE: the GPU nodes are observed, not created
    node_selector: tuple[tuple[str, str], ...] = ()
    # A regional cluster puts min/max nodes in each of its zones (GKE's default for a region: three).
    zones: int = 1


@dataclass(frozen=True)
class GpuNode:
    name: str
    gpus: int
    instance_type: str


@dataclass(frozen=True)
class GpuPoolObserved:
    pool: NodePoolState | None
    cluster_status: str = ""
    quotas: tuple[Quota, ...] = ()
    nodes: tuple[GpuNode, ...] = ()
    # For the scales_to_zero check only: nodes and pods are the autoscaler's, never part of owned().
    scale_to_zero: ScaleToZeroObserved | None = None
    # What the cluster autoscaler said about pending GPU pods (FailedScaleUp events), newest first.
    scale_up_failures: tuple[ScaleUpFailure, ...] = ()

    def owned(self) -> dict:
        if self.pool is None:
            return {"pool": None, "gpu_nodes": sorted(n.name for n in self.nodes)}
        p = self.pool
        return {"pool": {"name": p.name, "machine_type": p.machine_type, "accelerator": p.accelerator_type,
                         "count": p.accelerator_count, "autoscaling": [p.autoscaling_enabled, p.min_nodes, p.max_nodes],
                         "gpu_taint": GPU_TAINT in p.taints, "driver": p.gpu_driver_version,
                         "disk_size_gb": p.disk_size_gb}}


# ---- desired ------------------------------------------------------------------------------------
def desired_gpu_pool(env: EnvConfig) -> GpuPoolSpec:
    gp = env.substrate.gpu_pool
    if not env.is_gke:
        return GpuPoolSpec(env.cluster.name, env.cluster.location, env.region, None, tuple(sorted(gp.node_selector.items())))
    pool = NodePoolSpec(name=gp.name, machine_type=gp.machine_type, min_nodes=gp.min, max_nodes=gp.max,
                        disk_size_gb=gp.disk_size_gb, accelerator_type=gp.accelerator_type,
                        accelerator_count=gp.accelerator_count, gpu_driver_version=gp.driver_version,
                        taints=(GPU_TAINT,), service_account=node_service_account(env))
    regional = env.cluster.location == env.region
    return GpuPoolSpec(env.cluster.name, env.cluster.location, env.region, pool, zones=3 if regional else 1)


# Compute's regional quota metric per accelerator type where the name does not follow the rule below
# (https://cloud.google.com/compute/resource-usage#gpu_quota).
QUOTA_METRICS = {"nvidia-h100-80gb": "NVIDIA_H100_GPUS", "nvidia-h100-mega-80gb": "NVIDIA_H100_MEGA_GPUS",
                 "nvidia-tesla-a100": "NVIDIA_A100_GPUS", "nvidia-a100-80gb": "NVIDIA_A100_80GB_GPUS",
                 "nvidia-h200-141gb": "NVIDIA_H200_GPUS"}
# vCPUs of the accelerator-optimized machine types whose names do not end in their vCPU count.
MACHINE_CPUS = {"a2-highgpu-1g": 12, "a2-highgpu-2g": 24, "a2-highgpu-4g": 48, "a2-highgpu-8g": 96,
                "a2-ultragpu-1g": 12, "a2-ultragpu-2g": 24, "a2-ultragpu-4g": 48, "a2-ultragpu-8g": 96,
                "a3-highgpu-1g": 26, "a3-highgpu-2g": 52, "a3-highgpu-4g": 104, "a3-highgpu-8g": 208,
                "a3-megagpu-8g": 208}


def quota_metric(accelerator_type: str) -> str:
    """nvidia-l4 -> NVIDIA_L4_GPUS, nvidia-tesla-t4 -> NVIDIA_T4_GPUS (Compute's regional metric names)."""
    if accelerator_type in QUOTA_METRICS:
        return QUOTA_METRICS[accelerator_type]
    name = accelerator_type.upper().replace("NVIDIA-", "").replace("TESLA-", "").replace("-", "_")
    return f"NVIDIA_{name}_GPUS"


# ---- observe ------------------------------------------------------------------------------------
def observe_gpu_pool(run: Run, spec: GpuPoolSpec) -> GpuPoolObserved:
    if spec.pool is None:
        nodes = [n for n in run.conn.kube.nodes() if is_gpu_node(n, dict(spec.node_selector))]
        return GpuPoolObserved(None, "byo", nodes=tuple(
            GpuNode(n.name, int(n.allocatable.get("nvidia.com/gpu", 0) or 0),
                    n.labels.get("node.kubernetes.io/instance-type", "")) for n in nodes),
                               scale_to_zero=observe_scale_to_zero(run, None))
    g = run.conn.google
    cluster = g.get_cluster(spec.location, spec.cluster)
    if cluster is None:
        return GpuPoolObserved(None, "ABSENT")
    pool = cluster.pool(spec.pool.name)
    quotas: tuple[Quota, ...] = ()
    if pool is None:
        # Quota preflight: before creating anything, never after. A metric Compute does not report
        # (newer GPUs) stays unknown: a warning, never a limit of 0 that blocks for ever.
        regional = g.region_quotas(spec.region)
        glob = g.project_quotas()
        wanted = ((m, glob, "global") for m in GLOBAL_METRICS)
        wanted = [*wanted, *((m, regional, spec.region) for m in (quota_metric(spec.pool.accelerator_type),
                                                                   *REGIONAL_METRICS))]
        quotas = tuple(src.get(m) or Quota(m, scope, None, 0) for m, src, scope in wanted)
    failures = scale_up_failures(run) if pool is not None and cluster.status == "RUNNING" else ()
    return GpuPoolObserved(pool, cluster.status, quotas, scale_to_zero=observe_scale_to_zero(run, pool),
                           scale_up_failures=failures)


def scale_up_failures(run: Run) -> tuple[ScaleUpFailure, ...]:
    """The cluster autoscaler's FailedScaleUp events on pods still Pending (newest first, one per
    message): where GKE says a GPU node could not be added. An event outlives its cause by up to an
    hour; a pod that got its node, or is gone, is no failure. Only the pods named by such events are
    read: none in the steady state."""
    kube = run.conn.kube
    failures = kube.failed_scale_ups()
    pending: dict[tuple[str, str], bool] = {}
    for f in failures:
        if f.pod not in pending:
            pod = kube.get("v1", "Pod", f.pod[1], f.pod[0]) or {}
            pending[f.pod] = (pod.get("status") or {}).get("phase") == "Pending"
    seen: set[str] = set()
    out = []
    for f in failures:
        if pending.get(f.pod) and f.message not in seen:
            seen.add(f.message)
            out.append(f)
    return tuple(out)


# ---- plan ---------------------------------------------------------------------------------------
# What each GPU node takes from Compute's quotas: its GPUs, its vCPUs (regional and across regions)
# and an external address (IN_USE_ADDRESSES).
GLOBAL_METRICS = ("GPUS_ALL_REGIONS", "CPUS_ALL_REGIONS")
REGIONAL_METRICS = ("CPUS", "IN_USE_ADDRESSES")


def quota_needs(spec: GpuPoolSpec) -> dict[str, float]:
    pool = spec.pool
    nodes = pool.max_nodes * spec.zones
    gpus, cpus = pool.accelerator_count * nodes, machine_cpus(pool.machine_type) * nodes
    return {"GPUS_ALL_REGIONS": gpus, quota_metric(pool.accelerator_type): gpus, "CPUS": cpus,
            "CPUS_ALL_REGIONS": cpus, "IN_USE_ADDRESSES": nodes}


def unknown_quotas(quotas: tuple[Quota, ...]) -> list[str]:
    return [q.metric for q in quotas if q.limit is None]


def quota_shortfalls(spec: GpuPoolSpec, quotas: tuple[Quota, ...]) -> list[dict]:
    """What creating the pool and scaling it to max needs, against what is left (unknown metrics aside)."""
    need = quota_needs(spec)
    out = []
    for q in quotas:
        if q.limit is not None and q.metric in need and q.available < need[q.metric]:
            out.append({"metric": q.metric, "region": q.scope, "needed": need[q.metric], "available": q.available,
                        "limit": q.limit})
    return out


def machine_cpus(machine_type: str) -> int:
    if machine_type in MACHINE_CPUS:
        return MACHINE_CPUS[machine_type]
    try:
        return int(machine_type.rsplit("-", 1)[-1])
    except ValueError:
        return 1


def plan_gpu_pool(spec: GpuPoolSpec, observed: GpuPoolObserved) -> list[Action]:
    pool = spec.pool
    if pool is None:
        return []
    target = f"node pool {pool.name}"
    if observed.cluster_status == "ABSENT":
        return [Action("cannot-fix", target, observed="cluster absent", remedy="materialize cluster first")]
    if observed.cluster_status in GKE_BUSY or (observed.pool is not None and observed.pool.status in GKE_BUSY):
        return [Action("wait", target, "status", observed=observed.cluster_status, desired="RUNNING")]
    p = observed.pool
    if p is not None and p.status in ("ERROR", "RUNNING_WITH_ERROR"):
        return [Action("cannot-fix", target, "status", observed=f"{p.status}: {pool_trouble(p)}",
                       remedy=error_remedy(spec, p))]
    if p is None:
        short = quota_shortfalls(spec, observed.quotas)
        if short:
            return [Action("cannot-fix", target, "quota", desired={s["metric"]: s["needed"] for s in short},
                           observed={s["metric"]: s["available"] for s in short},
                           remedy="; ".join(f"{s['metric']} in {s['region']}: needs {s['needed']:g}, "
                                            f"{s['available']:g} available (limit {s['limit']:g})" for s in short)
                                  + " - request a quota increase (approval can take hours)")]
        return [Action("create", target, desired=f"{pool.machine_type} + {pool.accelerator_count}x "
                       f"{pool.accelerator_type}, autoscaling {pool.min_nodes}..{pool.max_nodes}",
                       needs_approval=True)]
    actions = []
    for field, want, have in (("machine_type", pool.machine_type, p.machine_type),
                              ("accelerator_type", pool.accelerator_type, p.accelerator_type),
                              ("accelerator_count", pool.accelerator_count, p.accelerator_count),
                              ("disk_size_gb", pool.disk_size_gb, p.disk_size_gb)):
        if want != have:
            actions.append(Action("cannot-fix", target, field, desired=want, observed=have,
                                  remedy="immutable on an existing pool: give substrate.gpu_pool.name a new name "
                                         "(gpuplat creates that pool, with approval); delete the old pool yourself"))
    if (p.autoscaling_enabled, p.min_nodes, p.max_nodes) != (True, pool.min_nodes, pool.max_nodes):
        actions.append(Action("update", target, "autoscaling",
                              desired={"enabled": True, "min": pool.min_nodes, "max": pool.max_nodes},
                              observed={"enabled": p.autoscaling_enabled, "min": p.min_nodes, "max": p.max_nodes}))
    missing = [t for t in pool.taints if t not in p.taints]
    if missing:
        actions.append(Action("update", target, "taints", desired=[f"{t.key}={t.value}:{t.effect}" for t in pool.taints],
                              observed=[f"{t.key}={t.value}:{t.effect}" for t in p.taints],
                              args={"taints": tuple(p.taints) + tuple(missing)}))
    return actions


# ---- apply --------------------------------------------------------------------------------------
def apply_gpu_pool(run: Run, spec: GpuPoolSpec, observed: GpuPoolObserved, actions: list[Action]) -> None:
    pool = spec.pool
    if pool is None:
        return
    g = run.conn.google
    observed, actions = after_operations_in_flight(run, spec.location, spec, observed, actions, observe_gpu_pool, plan_gpu_pool)
    for a in actions:
        if a.kind == "create":
            run.log.info(f"creating GPU node pool {pool.name} ({pool.accelerator_count}x {pool.accelerator_type})")
            op = g.create_node_pool(spec.location, spec.cluster, pool)
            try:
                g.wait_operation(op, CLUSTER_TIMEOUT_S, run.progress(f"creating node pool {pool.name}"))
            except Stockout as exc:
                raise StockoutError(f"{ERR_STOCKOUT}: {exc}", STOCKOUT_REMEDY) from None
        elif a.field == "autoscaling":
            op = g.set_node_pool_autoscaling(spec.location, spec.cluster, pool.name, pool.min_nodes, pool.max_nodes)
            g.wait_operation(op, CLUSTER_TIMEOUT_S, run.progress(f"setting autoscaling of {pool.name}"))
        elif a.field == "taints":
            op = g.update_node_pool(spec.location, spec.cluster, observed.pool, taints=a.args["taints"])
            g.wait_operation(op, CLUSTER_TIMEOUT_S, run.progress(f"updating taints of {pool.name}"))


class StockoutError(PieceError):
    pass


def pool_trouble(p: NodePoolState) -> str:
    return p.status_message or "; ".join(f"{code}: {message}" for code, message in p.conditions) or "no reason given"


def error_remedy(spec: GpuPoolSpec, p: NodePoolState) -> str:
    """What works for a pool GKE left in ERROR / RUNNING_WITH_ERROR (cluster_service.proto: "Customer may
    need to reissue a request"): gpuplat neither deletes pools nor retries a paid create on its own."""
    stockout = any(code == "GCE_STOCKOUT" for code, _ in p.conditions)
    why = f" It was a stockout: {STOCKOUT_REMEDY}." if stockout else ""
    if p.status == "RUNNING_WITH_ERROR":
        return f"the pool works in part and GKE keeps retrying; if it persists, recreate it.{why}"
    return (f"delete the failed pool yourself (gcloud container node-pools delete {p.name} --cluster {spec.cluster} "
            f"--location {spec.location}), then materialize gpu_pool to create it again (with approval).{why}")


# ---- checks -------------------------------------------------------------------------------------
def check_autoscaling(spec: GpuPoolSpec, observed: GpuPoolObserved, env: EnvConfig) -> Outcome:
    if spec.pool is None:
        return Outcome(True, f"{len(observed.nodes)} GPU node(s) observed; a fixed pool is not expected to scale to zero",
                       {"gpu_nodes": ", ".join(n.name for n in observed.nodes)})
    p = observed.pool
    if p is None:
        return Outcome(False, f"GPU pool {spec.pool.name} does not exist", {"remedy": "materialize gpu_pool"})
    want = spec.pool.min_nodes
    ok = p.autoscaling_enabled and p.min_nodes == want and p.max_nodes >= 1
    return Outcome(ok, f"autoscaling enabled={p.autoscaling_enabled} min={p.min_nodes} max={p.max_nodes}",
                   {"desired": f"enabled, min {want}{' (scale to zero)' if want == 0 else ''}, max >= 1",
                    "remedy": "" if ok else f"materialize gpu_pool: it re-asserts autoscaling with min {want}"})


def check_quota(spec: GpuPoolSpec, observed: GpuPoolObserved, env: EnvConfig) -> Outcome:
    if spec.pool is None:
        return Outcome(True, "GPU quota is not gpuplat's to check off GKE")
    if observed.pool is not None:
        return Outcome(True, f"pool {spec.pool.name} exists: its quota was sufficient when it was created")
    short = quota_shortfalls(spec, observed.quotas)
    meta = {q.metric: (f"{q.available:g} available of {q.limit:g} ({q.scope})" if q.limit is not None else
                       f"unknown: Compute does not report {q.metric} in {q.scope}") for q in observed.quotas}
    unknown = unknown_quotas(observed.quotas)
    if unknown:
        meta["warning"] = (f"cannot check {', '.join(unknown)}: Compute does not report it; GKE refuses the create "
                           f"if it is short (request the quota in the console if so)")
    if short:
        return Outcome(False, "; ".join(f"{s['metric']} in {s['region']}: needs {s['needed']:g}, {s['available']:g} "
                                        f"available" for s in short),
                       {**meta, "remedy": "request a quota increase in the console (IAM & Admin > Quotas)"})
    return Outcome(True, "quota sufficient for the GPU pool at max" + (f" ({', '.join(unknown)} unknown)" if unknown
                                                                      else ""), meta)


# The pool StatusCondition codes of a failed scale-up (cluster_service.proto), by cause.
CAPACITY_CAUSES = {"GCE_STOCKOUT": "stockout", "GCE_QUOTA_EXCEEDED": "quota",
                   "GKE_SERVICE_ACCOUNT_DELETED": "service account"}
CAPACITY_REMEDIES = {
    "stockout": STOCKOUT_REMEDY,
    "quota": "request a quota increase in the console (IAM & Admin > Quotas); the check gpu_quota_sufficient names "
             "the metrics",
    "service account": "the node service account was deleted: materialize service_accounts, then recreate the pool",
    "other": "read the autoscaler's message: kubectl get events --field-selector reason=FailedScaleUp -A",
}


def check_capacity(spec: GpuPoolSpec, observed: GpuPoolObserved, env: EnvConfig) -> Outcome:
    """Stockouts and quota at scale-up, read where GKE reports them: the pool's StatusConditions and the
    autoscaler's FailedScaleUp events on pending GPU pods."""
    if spec.pool is None:
        return Outcome(True, "off GKE: no autoscaler adds GPU nodes")
    p = observed.pool
    conditions = [(code, message) for code, message in (p.conditions if p else ()) if code in CAPACITY_CAUSES]
    if not conditions and not observed.scale_up_failures:
        return Outcome(True, "no scale-up failure reported for the GPU pool")
    causes = {CAPACITY_CAUSES[code] for code, _ in conditions} | {f.cause for f in observed.scale_up_failures}
    cause = next(c for c in ("stockout", "quota", "service account", "other") if c in causes)
    said = [f"{code}: {message}" for code, message in conditions] + [f.message for f in observed.scale_up_failures]
    return Outcome(False, f"GPU nodes cannot be added: {said[0]}",
                   {"pool_conditions": "; ".join(f"{c}: {m}" for c, m in conditions),
                    "failed_scale_ups": "; ".join(f.message for f in observed.scale_up_failures[:3]),
                    "remedy": CAPACITY_REMEDIES[cause]})


class GpuPool(Piece[GpuPoolSpec, GpuPoolObserved]):
    name = "gpu_pool"
    description = "The scale-to-zero GPU node pool (autoscaling min 0, nvidia.com/gpu taint), quota-checked before creation."
    group = "cluster"
    kinds = frozenset({"gke", "kubernetes"})
    deps = ("cluster",)
    owned_fields = ("machine_type", "accelerator", "autoscaling enabled/min/max", "nvidia.com/gpu taint present",
                    "disk_size_gb")
    checks = (Check("gpu_quota_sufficient", "GPUS_ALL_REGIONS, CPUS_ALL_REGIONS, the regional NVIDIA_<TYPE>_GPUS, "
                    "CPUS and IN_USE_ADDRESSES leave room for the GPU pool at max (per zone of a regional cluster).",
                    # Not blocking: it runs after gpu_pool, whose own plan already refuses a create the
                    # quota cannot hold (cannot-fix), so as a blocking check it could never block anything.
                    check_quota),
              Check("autoscaling_min_zero", "The GPU pool autoscales with min 0 and max >= 1.", check_autoscaling),
              Check("gpu_capacity_available", "No stockout or quota failure is reported for the GPU pool's scale-ups "
                    "(its StatusConditions, the autoscaler's FailedScaleUp events).", check_capacity),
              SCALES_TO_ZERO_CHECK)

    def desired(self, env: EnvConfig) -> GpuPoolSpec:
        return desired_gpu_pool(env)

    def observe(self, run: Run, spec: GpuPoolSpec) -> GpuPoolObserved:
        return observe_gpu_pool(run, spec)

    def plan(self, spec: GpuPoolSpec, observed: GpuPoolObserved) -> list[Action]:
        return plan_gpu_pool(spec, observed)

    def apply(self, run: Run, spec: GpuPoolSpec, observed: GpuPoolObserved, actions: list[Action]) -> None:
        apply_gpu_pool(run, spec, observed, actions)

    def links(self, env: EnvConfig, observed: GpuPoolObserved) -> dict[str, str]:
        return ({"console": f"https://console.cloud.google.com/kubernetes/nodepool/{env.cluster.location}/"
                            f"{env.cluster.name}/{env.substrate.gpu_pool.name}?project={env.cluster.projectID}"}
                if env.is_gke else {})


PIECE = GpuPool()
