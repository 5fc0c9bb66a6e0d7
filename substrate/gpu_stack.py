"""gpu_stack: driver, device plugin and DCGM metrics for the GPUs, consistent with the substrate.

`gke-managed`: GKE's node image provides them; gpuplat verifies and installs nothing.
`operator` (off GKE): the NVIDIA GPU Operator as a GitOps-managed Argo CD Application, after a
preflight of every GPU node decides whether the operator may install the driver.
`none`: a CPU-only cluster (or a stack you bring yourself), recorded as such.
"""

from __future__ import annotations

from dataclasses import dataclass

from .argocd import ARGO_API, meta
from .config import EnvConfig
from .piece import Check, Outcome, Piece, PieceError, Run, wait_until
from .plan import Action
from .preflight import driver_decision, failures, is_gpu_node, read_reports, run_preflight, summary

# GKE runs its plugin as DaemonSets named by node size and image (nvidia-gpu-device-plugin-small-cos,
# -medium-ubuntu, ...; rapidsai/deployment#572), labelled k8s-app=nvidia-gpu-device-plugin
# (GoogleCloudPlatform/container-engine-accelerators cmd/nvidia_gpu/device-plugin.yaml).
GKE_DEVICE_PLUGIN = "nvidia-gpu-device-plugin"
OPERATOR_APP = "nvidia-gpu-operator"
OPERATOR_REPO = "https://nvidia.github.io/gpu-operator"
READY_TIMEOUT_S = 900


@dataclass(frozen=True)
class GpuStackSpec:
    mode: str  # gke-managed | operator | none
    pool: str
    driver_version: str
    operator_version: str = ""
    probe_image: str = ""
    node_selector: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class GpuStackObserved:
    mode: str
    pool_driver_version: str = ""
    device_plugin: bool = False
    gpu_nodes: tuple[str, ...] = ()
    kernels: tuple[tuple[str, str], ...] = ()  # (node, running kernel): a new kernel needs a new preflight
    advertising: tuple[str, ...] = ()  # GPU nodes with nvidia.com/gpu allocatable
    reports: tuple[tuple[str, str], ...] = ()  # (node, report JSON), from the preflight ConfigMap
    app_values: str = ""  # the operator Application's chart and values as applied, "" when absent
    policy_state: str = ""

    def owned(self) -> dict:
        return {"mode": self.mode, "pool_driver_version": self.pool_driver_version, "device_plugin": self.device_plugin,
                "gpu_nodes": list(self.gpu_nodes), "app_values": self.app_values}

    @property
    def report_map(self) -> dict[str, dict]:
        import json
        return {n: json.loads(r) for n, r in self.reports}


# ---- desired ------------------------------------------------------------------------------------
def desired_gpu_stack(env: EnvConfig) -> GpuStackSpec:
    gp, sub = env.substrate.gpu_pool, env.substrate
    return GpuStackSpec(env.gpu_stack, gp.name, gp.driver_version, sub.gpu_operator_version, sub.probe_image,
                        tuple(sorted(gp.node_selector.items())))


def operator_application(spec: GpuStackSpec, driver_enabled: bool) -> dict:
    values = {"driver": {"enabled": driver_enabled}, "toolkit": {"enabled": True}, "devicePlugin": {"enabled": True},
              "dcgmExporter": {"enabled": True, "serviceMonitor": {"enabled": True}}, "nfd": {"enabled": True}}
    return {"apiVersion": ARGO_API, "kind": "Application", "metadata": meta(OPERATOR_APP, "argocd"),
            "spec": {"project": "default",
                     "source": {"repoURL": OPERATOR_REPO, "chart": "gpu-operator", "targetRevision": spec.operator_version,
                                "helm": {"valuesObject": values}},
                     "destination": {"server": "https://kubernetes.default.svc", "namespace": "gpu-operator"},
                     # Its CRDs are too large for client-side apply's annotation.
                     "syncPolicy": {"automated": {"prune": True, "selfHeal": True},
                                    "syncOptions": ["CreateNamespace=true", "ServerSideApply=true"]}}}


def app_fingerprint(app: dict) -> str:
    src = app["spec"]["source"]
    return f"{src['chart']}@{src['targetRevision']} driver.enabled={src['helm']['valuesObject']['driver']['enabled']}"


# ---- observe ------------------------------------------------------------------------------------
def observe_gpu_stack(run: Run, spec: GpuStackSpec) -> GpuStackObserved:
    if spec.mode == "none":
        return GpuStackObserved("none")
    kube = run.conn.kube
    if spec.mode == "gke-managed":
        plugin = any(ds["metadata"]["name"].startswith(GKE_DEVICE_PLUGIN)
                     or (ds["metadata"].get("labels") or {}).get("k8s-app") == GKE_DEVICE_PLUGIN
                     for ds in kube.list("apps/v1", "DaemonSet", "kube-system"))
        cluster = run.conn.google.get_cluster(run.env.cluster.location, run.env.cluster.name)
        pool = cluster.pool(spec.pool) if cluster else None
        return GpuStackObserved(spec.mode, pool.gpu_driver_version if pool else "", plugin)
    import json
    nodes = [n for n in kube.nodes() if is_gpu_node(n, dict(spec.node_selector))]
    reports = read_reports(run)
    app = kube.get(ARGO_API, "Application", OPERATOR_APP, "argocd") if kube.has_kind(ARGO_API, "Application") else None
    values = ""
    if app is not None:
        try:
            values = app_fingerprint(app)
        except (KeyError, TypeError):
            values = "edited by hand"
    policy = kube.get("nvidia.com/v1", "ClusterPolicy", "cluster-policy") if kube.has_kind("nvidia.com/v1", "ClusterPolicy") else None
    return GpuStackObserved(
        spec.mode, gpu_nodes=tuple(sorted(n.name for n in nodes)), kernels=tuple(sorted((n.name, n.kernel) for n in nodes)),
        advertising=tuple(sorted(n.name for n in nodes if int(n.allocatable.get("nvidia.com/gpu", 0) or 0) > 0)),
        reports=tuple(sorted((n, json.dumps(r, sort_keys=True)) for n, r in reports.items() if n in {x.name for x in nodes})),
        app_values=values, policy_state=((policy or {}).get("status") or {}).get("state", ""))


# ---- plan ---------------------------------------------------------------------------------------
def plan_gpu_stack(spec: GpuStackSpec, observed: GpuStackObserved) -> list[Action]:
    if spec.mode == "none":
        return []
    if spec.mode == "gke-managed":
        return _plan_gke(spec, observed)
    if not observed.gpu_nodes:
        return [Action("cannot-fix", "GPU nodes", observed="none found",
                       remedy="label your GPU nodes nvidia.com/gpu.present=true or set substrate.gpu_pool.node_selector")]
    reports = observed.report_map
    failing = {node for node, _ in failures(reports)}
    kernels = dict(observed.kernels)
    # Probe again what was never probed, what failed (the user may have fixed it since) and what
    # booted another kernel (headers present for the old one say nothing about the new one).
    stale = [n for n in observed.gpu_nodes if n not in reports or n in failing
             or (kernels.get(n) and (reports[n].get("facts") or {}).get("kernel_release") not in (None, kernels[n]))]
    actions = [Action("create", f"preflight on node {n}", desired="probe report", args={"node": n}) for n in stale]
    for node, verdict in failures(reports):
        actions.append(Action("cannot-fix", f"GPU node {node}", verdict.get("id", ""), observed=verdict.get("message"),
                              remedy=verdict.get("remedy") or "see the preflight report"))
    if stale or any(a.kind == "cannot-fix" for a in actions):
        if not observed.app_values:
            actions.append(Action("create", f"Application {OPERATOR_APP}", desired="after the preflight decides driver.enabled"))
        return actions
    decision = driver_decision(reports)
    if decision is None:
        return [Action("cannot-fix", f"Application {OPERATOR_APP}", "driver.enabled",
                       observed={n: r.get("operator_driver_enabled") for n, r in reports.items()},
                       remedy="some GPU nodes have a preinstalled driver and others need one: make them alike, or "
                              "select one kind with substrate.gpu_pool.node_selector")]
    want = app_fingerprint(operator_application(spec, decision))
    if observed.app_values != want:
        actions.append(Action("create" if not observed.app_values else "update", f"Application {OPERATOR_APP}",
                              "chart and values", desired=want, observed=observed.app_values or None,
                              args={"driver_enabled": decision}))
    return actions


def _plan_gke(spec: GpuStackSpec, observed: GpuStackObserved) -> list[Action]:
    actions = []
    if observed.pool_driver_version != spec.driver_version:
        actions.append(Action("cannot-fix", f"node pool {spec.pool}", "gpu_driver_version", desired=spec.driver_version,
                              observed=observed.pool_driver_version or "(not set: no driver installed by GKE)",
                              remedy="the driver installation is chosen when the pool is created: create the pool "
                                     "under a new substrate.gpu_pool.name and delete the old one yourself"))
    if not observed.device_plugin:
        actions.append(Action("cannot-fix", f"DaemonSets kube-system/{GKE_DEVICE_PLUGIN}-*", observed="absent",
                              remedy="GKE deploys it on clusters with GPU pools; check that the GPU pool exists and "
                                     "that nothing deleted the DaemonSet (GKE's addon manager recreates it)"))
    return actions


# ---- apply --------------------------------------------------------------------------------------
def apply_gpu_stack(run: Run, spec: GpuStackSpec, observed: GpuStackObserved, actions: list[Action]) -> None:
    if spec.mode != "operator":
        return  # gke-managed installs nothing: every difference is a cannot-fix with its remedy
    stale = [a.args["node"] for a in actions if a.args.get("node")]
    if stale:
        run_preflight(run, stale, spec.probe_image)
        observed = observe_gpu_stack(run, spec)
        actions = plan_gpu_stack(spec, observed)
    blocked = [a for a in actions if a.kind == "cannot-fix"]
    if blocked:
        raise PieceError("GPU node preflight failed: " + "; ".join(a.summary() for a in blocked))
    app = next((a for a in actions if a.target == f"Application {OPERATOR_APP}"), None)
    if app is not None:
        if not run.conn.kube.has_kind(ARGO_API, "Application"):
            raise PieceError("the GPU Operator is an Argo CD Application and Argo CD is not installed",
                             "materialize argocd first (it comes before gpu_stack)")
        run.log.info(f"applying Application {OPERATOR_APP} ({app.desired})")
        run.conn.kube.apply(operator_application(spec, app.args["driver_enabled"]))
    kube = run.conn.kube

    def ready():
        now = observe_gpu_stack(run, spec)
        return now.policy_state == "ready" and set(now.advertising) == set(now.gpu_nodes)
    if not wait_until(ready, READY_TIMEOUT_S, "the GPU Operator's ClusterPolicy ready and every GPU node advertising "
                      "nvidia.com/gpu", run.log, interval=2.0):
        now = observe_gpu_stack(run, spec)
        policy = kube.get("nvidia.com/v1", "ClusterPolicy", "cluster-policy") or {}
        conds = "; ".join(c.get("message", "") for c in (policy.get("status") or {}).get("conditions", [])
                          if c.get("message"))
        raise PieceError(f"GPU Operator not ready after {READY_TIMEOUT_S}s: ClusterPolicy {now.policy_state or 'absent'}"
                         f", nodes without nvidia.com/gpu: {', '.join(set(now.gpu_nodes) - set(now.advertising))}. {conds}")


# ---- checks -------------------------------------------------------------------------------------
def check_consistent(spec: GpuStackSpec, observed: GpuStackObserved, env: EnvConfig) -> Outcome:
    if spec.mode == "none":
        return Outcome(True, "gpu_stack none: a CPU-only cluster, or a GPU stack you bring yourself")
    if spec.mode == "gke-managed":
        ok = observed.device_plugin and observed.pool_driver_version == spec.driver_version
        return Outcome(ok, f"gke-managed: pool driver {observed.pool_driver_version or 'unset'}, device plugin "
                           f"{'present' if observed.device_plugin else 'absent'}",
                       {"desired_driver": spec.driver_version, "observed_driver": observed.pool_driver_version,
                        "remedy": "" if ok else "see the gpu_stack plan for the remedy"})
    missing = sorted(set(observed.gpu_nodes) - set(observed.advertising))
    ok = observed.policy_state == "ready" and not missing and bool(observed.gpu_nodes)
    return Outcome(ok, f"GPU Operator: ClusterPolicy {observed.policy_state or 'absent'}, "
                       f"{len(observed.advertising)}/{len(observed.gpu_nodes)} GPU nodes advertise nvidia.com/gpu",
                   {"application": observed.app_values, "not_advertising": ", ".join(missing),
                    "remedy": "" if ok else "materialize gpu_stack; kubectl -n gpu-operator get pods"})


def check_preflight(spec: GpuStackSpec, observed: GpuStackObserved, env: EnvConfig) -> Outcome:
    if spec.mode != "operator":
        return Outcome(True, f"gpu_stack {spec.mode}: the node image or you own the node prerequisites")
    reports = observed.report_map
    failed = failures(reports)
    unprobed = [n for n in observed.gpu_nodes if n not in reports]
    meta = {f"node {n}": summary(r) for n, r in reports.items()}
    meta["remedy"] = "; ".join(f"{n}: {v.get('remedy') or v.get('message')}" for n, v in failed) or (
        "materialize gpu_stack to probe the unprobed nodes" if unprobed else "")
    return Outcome(not failed and not unprobed and bool(reports),
                   f"{len(reports)} GPU node(s) probed, {len(failed)} failing verdict(s), {len(unprobed)} unprobed",
                   meta)


class GpuStack(Piece[GpuStackSpec, GpuStackObserved]):
    name = "gpu_stack"
    description = "GPU driver, device plugin and DCGM metrics, consistent with the substrate (GKE-managed, or the NVIDIA GPU Operator after a node preflight)."
    group = "cluster"
    kinds = frozenset({"kubernetes", "nvidia"})
    deps = ("gpu_pool", "argocd")
    owned_fields = ("gpu_driver_version of the GPU pool (GKE)", "device plugin present (GKE)",
                    "Application nvidia-gpu-operator chart and values (operator)", "preflight report per GPU node")
    checks = (Check("gpu_stack_consistent", "The GPU stack matches the substrate: GKE-managed on GKE, the GPU Operator "
                    "ready off GKE.", check_consistent),
              Check("gpu_node_preflight", "Every GPU node passed the preflight: driver or headers, Secure Boot off on Ada.",
                    check_preflight))

    def desired(self, env: EnvConfig) -> GpuStackSpec:
        return desired_gpu_stack(env)

    def observe(self, run: Run, spec: GpuStackSpec) -> GpuStackObserved:
        return observe_gpu_stack(run, spec)

    def plan(self, spec: GpuStackSpec, observed: GpuStackObserved) -> list[Action]:
        return plan_gpu_stack(spec, observed)

    def apply(self, run: Run, spec: GpuStackSpec, observed: GpuStackObserved, actions: list[Action]) -> None:
        apply_gpu_stack(run, spec, observed, actions)


PIECE = GpuStack()
