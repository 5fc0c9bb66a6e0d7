"""gpu_stack: driver, device plugin and metrics for the GPUs, consistent with the substrate.

On GKE the node image provides them (`gke-managed`): gpuplat verifies, installs nothing. `none`
records a CPU-only cluster.
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import EnvConfig
from .piece import Check, Outcome, Piece, Run
from .plan import Action

GKE_DEVICE_PLUGIN = ("kube-system", "nvidia-gpu-device-plugin")


@dataclass(frozen=True)
class GpuStackSpec:
    mode: str  # gke-managed | operator | none
    substrate: str
    pool: str
    driver_version: str


@dataclass(frozen=True)
class GpuStackObserved:
    mode: str
    pool_driver_version: str = ""
    device_plugin: bool = False

    def owned(self) -> dict:
        return {"mode": self.mode, "pool_driver_version": self.pool_driver_version, "device_plugin": self.device_plugin}


# ---- desired ------------------------------------------------------------------------------------
def desired_gpu_stack(env: EnvConfig) -> GpuStackSpec:
    gp = env.substrate.gpu_pool
    return GpuStackSpec(env.gpu_stack, env.substrate.kind, gp.name, gp.driver_version)


# ---- observe ------------------------------------------------------------------------------------
def observe_gpu_stack(run: Run, spec: GpuStackSpec) -> GpuStackObserved:
    if spec.mode == "none":
        return GpuStackObserved("none")
    ns, name = GKE_DEVICE_PLUGIN
    plugin = run.conn.kube.get("apps/v1", "DaemonSet", name, ns) is not None
    cluster = run.conn.google.get_cluster(run.env.cluster.location, run.env.cluster.name)
    pool = cluster.pool(spec.pool) if cluster else None
    return GpuStackObserved(spec.mode, pool.gpu_driver_version if pool else "", plugin)


# ---- plan ---------------------------------------------------------------------------------------
def plan_gpu_stack(spec: GpuStackSpec, observed: GpuStackObserved) -> list[Action]:
    if spec.mode == "none":
        return []
    actions = []
    if observed.pool_driver_version != spec.driver_version:
        actions.append(Action("cannot-fix", f"node pool {spec.pool}", "gpu_driver_version", desired=spec.driver_version,
                              observed=observed.pool_driver_version or "(not set: no driver installed by GKE)",
                              remedy="the driver installation is chosen when the pool is created: create the pool "
                                     "under a new substrate.gpu_pool.name and delete the old one yourself"))
    if not observed.device_plugin:
        actions.append(Action("cannot-fix", "DaemonSet kube-system/nvidia-gpu-device-plugin", observed="absent",
                              remedy="GKE deploys it on clusters with GPU pools; check that the GPU pool exists and "
                                     "that nothing deleted the DaemonSet (GKE's addon manager recreates it)"))
    return actions


# ---- apply --------------------------------------------------------------------------------------
def apply_gpu_stack(run: Run, spec: GpuStackSpec, observed: GpuStackObserved, actions: list[Action]) -> None:
    # gke-managed installs nothing: every difference is a cannot-fix with its remedy.
    return None


# ---- checks -------------------------------------------------------------------------------------
def check_consistent(spec: GpuStackSpec, observed: GpuStackObserved, env: EnvConfig) -> Outcome:
    if spec.mode == "none":
        return Outcome(True, "gpu_stack none: a CPU-only cluster")
    ok = observed.device_plugin and observed.pool_driver_version == spec.driver_version
    return Outcome(ok, f"gke-managed: pool driver {observed.pool_driver_version or 'unset'}, device plugin "
                       f"{'present' if observed.device_plugin else 'absent'}",
                   {"desired_driver": spec.driver_version, "observed_driver": observed.pool_driver_version,
                    "device_plugin": observed.device_plugin,
                    "remedy": "" if ok else "see the gpu_stack plan for the remedy"})


PIECE = Piece(
    name="gpu_stack",
    description="GPU driver, device plugin and DCGM metrics, consistent with the substrate (GKE-managed on GKE).",
    group="substrate", kinds=frozenset({"gke", "nvidia"}), deps=("gpu_pool",),
    owned_fields=("gpu_driver_version of the GPU pool", "device plugin present"),
    desired=desired_gpu_stack, observe=observe_gpu_stack, plan=plan_gpu_stack, apply=apply_gpu_stack,
    checks=(Check("gpu_stack_consistent", "The GPU stack matches the substrate: GKE-managed driver and device plugin "
                  "on GKE.", check_consistent),),
)
