"""Why a GPU node does not go back to zero: the cluster autoscaler's scale-down rules, pod by pod.

An idle L4 costs money every hour, and the seed platform's most common surprise was a GPU pool that
never returned to zero nodes. The cluster autoscaler removes a node that is unneeded for its
scale-down window (10 minutes on GKE) unless something holds it. This module names what holds it,
by the autoscaler's own rules, so the check can say which pod to fix and what the wait costs:

- the cluster-autoscaler FAQ, "What types of pods can prevent CA from removing a node?"
  https://github.com/kubernetes/autoscaler/blob/master/cluster-autoscaler/FAQ.md#what-types-of-pods-can-prevent-ca-from-removing-a-node
- the reason names are the autoscaler's own (`drain.BlockingPodReason` and
  `simulator.UnremovableReason`), so they can be searched in its logs and events.

`observe_scale_to_zero` reads (nodes, the pods on GPU nodes, PodDisruptionBudgets, prices);
`diagnose` is pure: the `scales_to_zero` check evaluates it at materialization and in the
scheduled drift checks, and the scale-to-zero guard sensor adds how long each node has been idle.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from resources.errors import GpuplatError
from resources.models import NodePoolState, NodeState, PdbState, PodState, Taint

from .config import EnvConfig
from .piece import Check, Outcome, Run
from .prices import NodePrice, node_price, quantity
from .preflight import is_gpu_node

GPU = "nvidia.com/gpu"
POOL_LABEL = "cloud.google.com/gke-nodepool"
SAFE_TO_EVICT = "cluster-autoscaler.kubernetes.io/safe-to-evict"
SAFE_TO_EVICT_LOCAL = "cluster-autoscaler.kubernetes.io/safe-to-evict-local-volumes"
SCALE_DOWN_DISABLED = "cluster-autoscaler.kubernetes.io/scale-down-disabled"
MIRROR = "kubernetes.io/config.mirror"
# --scale-down-utilization-threshold and --scale-down-gpu-utilization-threshold both default to 0.5;
# on a node with GPUs only GPU requests count ("cpu and memory utilization will be ignored").
UTILIZATION_THRESHOLD = 0.5
# --expendable-pods-priority-cutoff: pods below it are deleted without a second thought.
EXPENDABLE_PRIORITY = -10
CHECK_NAME = "scales_to_zero"
# The autoscaler's reasons.
NOT_SAFE_TO_EVICT = "NotSafeToEvictAnnotation"
NOT_REPLICATED = "NotReplicated"
UNMOVABLE_KUBE_SYSTEM = "UnmovableKubeSystemPod"
LOCAL_STORAGE = "LocalStorageRequested"
NOT_ENOUGH_PDB = "NotEnoughPdb"
NO_PLACE = "NoPlaceToMovePods"
SCALE_DOWN_DISABLED_REASON = "ScaleDownDisabledAnnotation"
NOT_UNDERUTILIZED = "NotUnderutilized"
MIN_SIZE = "NodeGroupMinSizeReached"

REMEDIES = {
    NOT_SAFE_TO_EVICT: f'remove the pod\'s annotation {SAFE_TO_EVICT}: "false" (or let it finish)',
    NOT_REPLICATED: "a bare pod is never evicted: delete it, or run it from a Deployment/Job",
    UNMOVABLE_KUBE_SYSTEM: "give the kube-system workload a PodDisruptionBudget that allows a disruption, or "
                           f'annotate its pods {SAFE_TO_EVICT}: "true"',
    LOCAL_STORAGE: f"use an emptyDir with medium Memory or a PVC, or list the volume in the annotation "
                   f"{SAFE_TO_EVICT_LOCAL}",
    NOT_ENOUGH_PDB: "the pod's PodDisruptionBudget allows no disruption now: raise maxUnavailable or scale the "
                    "workload up",
    NO_PLACE: "no other node accepts the pod (node selector, node affinity, taints or resources): relax its "
              "placement, or keep it off the GPU pool",
    SCALE_DOWN_DISABLED_REASON: f"kubectl annotate node <node> {SCALE_DOWN_DISABLED}-",
    NOT_UNDERUTILIZED: "the pods' requests keep the node above the autoscaler's utilization threshold (0.5): "
                       "move the non-GPU pods off the GPU pool (the nvidia.com/gpu taint keeps them away)",
    MIN_SIZE: "materialize gpu_pool: it sets the pool's autoscaling min back to 0",
}


# ---- what is observed ----------------------------------------------------------------------------
@dataclass(frozen=True)
class ScaleToZeroObserved:
    applies: bool
    note: str = ""  # why it does not apply, or what could not be observed
    pool: str = ""
    pool_min: int | None = None  # the pool's autoscaling min (per zone); None when unknown
    gpu_nodes: tuple[NodeState, ...] = ()
    other_nodes: tuple[NodeState, ...] = ()
    pods: dict[str, tuple[PodState, ...]] = field(default_factory=dict)  # GPU node -> its pods
    pdbs: tuple[PdbState, ...] = ()
    # Required node-affinity terms of the pods that have any ((namespace, name) -> nodeSelectorTerms).
    affinity: dict[tuple[str, str], tuple[dict, ...]] = field(default_factory=dict)
    price: NodePrice | None = None
    error: str = ""
    # Since when each GPU node has had no GPU pod, by the cluster's own records: the end of its last
    # GPU pod still listed, or the node's creation (a GPU pod deleted outright leaves no record).
    quiet_since: dict[str, float] = field(default_factory=dict)
    # The cluster's clock when this was observed (the sandbox's simulated one on the sandbox), and the grace
    # period after which an idle node counts as stuck: with `quiet_since`, the same rule the guard applies.
    observed_at: float | None = None
    grace_s: float = 0.0


@dataclass(frozen=True)
class Blocker:
    node: str
    reason: str
    pod: str = ""  # namespace/name; "" for a node's or the pool's own reason
    detail: str = ""

    @property
    def remedy(self) -> str:
        return REMEDIES.get(self.reason, "")


@dataclass(frozen=True)
class Diagnosis:
    applies: bool
    note: str
    pool: str
    busy: tuple[str, ...] = ()
    idle: tuple[str, ...] = ()
    blockers: tuple[Blocker, ...] = ()
    idle_for: dict[str, float] = field(default_factory=dict)  # seconds, when a sensor tracked it
    stuck: tuple[str, ...] = ()  # idle longer than the grace period
    grace_s: float = 0.0
    price: NodePrice | None = None
    error: str = ""

    @property
    def failing(self) -> bool:
        """A GPU node idle past the grace period (or nodes that could not be read): money burning."""
        return bool(self.error) or bool(self.stuck)


# ---- observe -------------------------------------------------------------------------------------
def applies_to(env: EnvConfig) -> bool:
    """A scale-to-zero GPU pool: GKE (gpuplat created it) with autoscaling min 0 in the config."""
    return env.is_gke and env.substrate.gpu_pool.min == 0


def gpu_nodes_of(env: EnvConfig, nodes: list[NodeState]) -> list[NodeState]:
    if env.is_gke:
        return [n for n in nodes if n.labels.get(POOL_LABEL) == env.substrate.gpu_pool.name]
    return [n for n in nodes if is_gpu_node(n, dict(env.substrate.gpu_pool.node_selector))]


def observe_scale_to_zero(run: Run, pool: NodePoolState | None) -> ScaleToZeroObserved:
    """GPU nodes, the pods on them, PDBs and the node price: one node list, one pod list per GPU node.

    Kubernetes errors are recorded, not raised: gpu_pool's own plan speaks only to Google, and an
    unreachable cluster must not fail it; the check reports the error instead.
    """
    env = run.env
    name = env.substrate.gpu_pool.name
    if env.is_gke and pool is None:
        return ScaleToZeroObserved(False, f"GPU pool {name} does not exist", pool=name)
    kube = run.conn.kube
    try:
        nodes = kube.nodes()
        gpu = gpu_nodes_of(env, nodes)
        others = tuple(n for n in nodes if n not in gpu)
        listed = {n.name: tuple(kube.pods(field_selector=f"spec.nodeName={n.name}")) for n in gpu}
        pods = {name: tuple(p for p in on if _active(p)) for name, on in listed.items()}
        quiet_since = {n.name: max([_epoch(n.created), *(_epoch(p.finished) for p in listed[n.name]
                                                         if p.gpu_request and p.finished)])
                       for n in gpu if n.created}
        idle = [n for n in gpu if not any(p.gpu_request for p in pods[n.name])]
        candidates = [p for n in idle for p in pods[n.name] if not _never_blocks(p)]
        pdbs = tuple(kube.pdbs()) if candidates else ()
        affinity = {}
        for p in candidates:
            if p.has_affinity:
                live = kube.get("v1", "Pod", p.name, p.namespace) or {}
                affinity[(p.namespace, p.name)] = _required_terms(live)
    except GpuplatError as exc:  # known outside-world errors become the check's one line; bugs surface
        text = exc.line()
        return ScaleToZeroObserved(applies_to(env), pool=name, pool_min=pool.min_nodes if pool else None,
                                   error=f"cannot observe the GPU nodes: {text}")
    facts = ScaleToZeroObserved(applies_to(env), "" if applies_to(env) else _not_applicable(env), name,
                                pool.min_nodes if pool else None, tuple(gpu), others, pods, pdbs, affinity,
                                quiet_since=quiet_since, observed_at=run.conn.now() if idle else None,
                                grace_s=env.substrate.gpu_pool.scale_to_zero_grace_minutes * 60.0)
    # The price is read only when it will be shown: an idle node that something holds, or off GKE.
    d = diagnose(facts)
    if d.idle and (d.blockers or not facts.applies):
        facts = replace(facts, price=node_price(run, next(n for n in gpu if n.name == d.idle[0])))
    return facts


def _not_applicable(env: EnvConfig) -> str:
    if not env.is_gke:
        return (f"substrate {env.substrate.kind}: GPU nodes are servers you provide; gpuplat does not expect them "
                f"to scale to zero, it reports what idle ones cost")
    return f"substrate.gpu_pool.min is {env.substrate.gpu_pool.min}: the pool is meant to keep nodes"


def _epoch(iso: str) -> float:
    from datetime import datetime
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def _active(p: PodState) -> bool:
    return p.phase not in ("Succeeded", "Failed")


def _required_terms(pod: dict) -> tuple[dict, ...]:
    aff = ((pod.get("spec") or {}).get("affinity") or {}).get("nodeAffinity") or {}
    req = aff.get("requiredDuringSchedulingIgnoredDuringExecution") or {}
    return tuple(req.get("nodeSelectorTerms") or ())


# ---- the rules (pure) ----------------------------------------------------------------------------
def _never_blocks(pod: PodState) -> bool:
    # Mirror (static) pods and DaemonSet pods are not drained; expendable pods are just deleted.
    return MIRROR in pod.annotations or "DaemonSet" in pod.owner_kinds or pod.priority < EXPENDABLE_PRIORITY


def _pdb_matches(pdb: PdbState, pod: PodState) -> bool:
    # policy/v1: an empty selector selects every pod in the namespace. (PdbState carries matchLabels
    # only, so a selector of matchExpressions alone is read as empty: this errs towards naming a PDB.)
    return pdb.namespace == pod.namespace and all(pod.labels.get(k) == v for k, v in pdb.selector.items())


def _tolerates(tolerations: tuple[dict, ...], taint: Taint) -> bool:
    for tol in tolerations:
        if tol.get("effect") and tol["effect"] != taint.effect:
            continue
        if not tol.get("key") or tol["key"] == taint.key:  # keyless means operator Exists: everything
            return True
    return False


def _term_matches(term: dict, labels: dict) -> bool:
    for expr in term.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), [str(v) for v in expr.get("values") or []]
        have = labels.get(key)
        if op == "In" and have not in values:
            return False
        if op == "NotIn" and have in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
        if op in ("Gt", "Lt"):
            try:
                ok = (int(have) > int(values[0])) if op == "Gt" else (int(have) < int(values[0]))
            except (TypeError, ValueError, IndexError):
                return False
            if not ok:
                return False
    return True


def fits_elsewhere(pod: PodState, node: NodeState, terms: tuple[dict, ...]) -> bool:
    """Whether `node` would take the pod: selector, required node affinity, taints, allocatable.

    Simplified against the autoscaler's simulation: it compares requests with the node's allocatable,
    not with what other pods already use there, and does not evaluate inter-pod (anti-)affinity.
    """
    if node.unschedulable or not node.ready:
        return False
    if any(node.labels.get(k) != v for k, v in pod.node_selector.items()):
        return False
    if terms and not any(_term_matches(t, node.labels) for t in terms):
        return False
    for taint in node.taints:
        if taint.effect in ("NoSchedule", "NoExecute") and not _tolerates(pod.tolerations, taint):
            return False
    for resource in ("cpu", "memory", GPU):
        if pod.requests.get(resource, 0) > quantity(node.allocatable.get(resource)):
            return False
    return True


def pod_blockers(pod: PodState, node: str, pdbs: tuple[PdbState, ...], others: tuple[NodeState, ...],
                 terms: tuple[dict, ...] = ()) -> list[Blocker]:
    """Every reason this pod keeps `node`, by the autoscaler's drain rules (all of them, not the first)."""
    if _never_blocks(pod):
        return []
    ref = f"{pod.namespace}/{pod.name}"
    out: list[Blocker] = []
    safe = pod.annotations.get(SAFE_TO_EVICT)
    matching = [p for p in pdbs if _pdb_matches(p, pod)]
    if safe == "false":
        out.append(Blocker(node, NOT_SAFE_TO_EVICT, ref, f'annotated {SAFE_TO_EVICT}: "false"'))
    if safe != "true":  # safe-to-evict "true" lifts the controller, kube-system and local-storage rules
        if not pod.owner_kinds:
            out.append(Blocker(node, NOT_REPLICATED, ref, "not backed by a controller (no ownerReferences)"))
        if pod.namespace == "kube-system" and not any(p.disruptions_allowed >= 1 for p in matching):
            why = "no PodDisruptionBudget" if not matching else \
                f"its PodDisruptionBudget {matching[0].name} allows no disruption"
            out.append(Blocker(node, UNMOVABLE_KUBE_SYSTEM, ref, f"kube-system pod, not a DaemonSet's, with {why}"))
        allowed = {v.strip() for v in pod.annotations.get(SAFE_TO_EVICT_LOCAL, "").split(",") if v.strip()}
        local = [v["name"] for v in pod.volumes
                 if (v["type"] == "hostPath" or (v["type"] == "emptyDir" and v.get("medium") != "Memory"))
                 and v["name"] not in allowed]
        if local:
            out.append(Blocker(node, LOCAL_STORAGE, ref, f"local storage: {', '.join(local)}"))
    if pod.namespace != "kube-system" or safe == "true":  # kube-system's PDB rule above already says it
        for pdb in matching:
            if pdb.disruptions_allowed < 1:
                out.append(Blocker(node, NOT_ENOUGH_PDB, ref, f"PodDisruptionBudget {pdb.namespace}/{pdb.name} "
                                                              f"allows {pdb.disruptions_allowed} disruptions"))
    if not any(fits_elsewhere(pod, n, terms) for n in others):
        pinned = ", ".join(f"{k}={v}" for k, v in pod.node_selector.items())
        out.append(Blocker(node, NO_PLACE, ref, "no other node takes it" + (f" (nodeSelector {pinned})" if pinned
                                                                           else "")))
    return out


def node_utilization(node: NodeState, pods: tuple[PodState, ...]) -> float:
    """The autoscaler's utilization: GPU requests on a GPU node, else the larger of CPU and memory."""
    gpu_alloc = quantity(node.allocatable.get(GPU))
    if gpu_alloc > 0:
        return sum(p.gpu_request for p in pods) / gpu_alloc
    shares = []
    for resource in ("cpu", "memory"):
        alloc = quantity(node.allocatable.get(resource))
        if alloc > 0:
            shares.append(sum(p.requests.get(resource, 0.0) for p in pods) / alloc)
    return max(shares, default=0.0)


def diagnose(obs: ScaleToZeroObserved, idle_since: dict[str, float] | None = None, now: float | None = None,
             grace_s: float = 0.0) -> Diagnosis:
    """Which GPU nodes are idle, what holds each one, and (given when they became idle) which are stuck."""
    base = Diagnosis(obs.applies, obs.note, obs.pool, grace_s=grace_s, price=obs.price, error=obs.error)
    if obs.error:
        return base
    busy, idle, blockers = [], [], []
    for node in obs.gpu_nodes:
        pods = obs.pods.get(node.name, ())
        if any(p.gpu_request for p in pods):
            busy.append(node.name)
            continue
        idle.append(node.name)
        if not obs.applies:
            continue
        if obs.pool_min:
            blockers.append(Blocker(node.name, MIN_SIZE, "", f"pool {obs.pool} has autoscaling min {obs.pool_min} "
                                                              f"per zone: the autoscaler never goes below it"))
        if node.annotations.get(SCALE_DOWN_DISABLED) == "true":
            blockers.append(Blocker(node.name, SCALE_DOWN_DISABLED_REASON, "",
                                    f'node annotated {SCALE_DOWN_DISABLED}: "true"'))
        util = node_utilization(node, pods)
        if util >= UTILIZATION_THRESHOLD:
            blockers.append(Blocker(node.name, NOT_UNDERUTILIZED, "",
                                    f"requests are {util:.0%} of allocatable (threshold {UTILIZATION_THRESHOLD:.0%})"))
        # Where the pods could go: every other node (another GPU node too, if the pod tolerates its taint).
        others = obs.other_nodes + tuple(g for g in obs.gpu_nodes if g.name != node.name)
        for pod in sorted(pods, key=lambda p: (p.namespace, p.name)):
            blockers.extend(pod_blockers(pod, node.name, obs.pdbs, others,
                                         obs.affinity.get((pod.namespace, pod.name), ())))
    idle_for: dict[str, float] = {}
    stuck: list[str] = []
    if idle_since is not None and now is not None:
        for name in idle:
            if name in idle_since:
                idle_for[name] = max(0.0, now - idle_since[name])
                if obs.applies and idle_for[name] >= grace_s:
                    stuck.append(name)
    return Diagnosis(obs.applies, obs.note, obs.pool, tuple(busy), tuple(idle), tuple(blockers), idle_for,
                     tuple(stuck), grace_s, obs.price)


# ---- reporting -----------------------------------------------------------------------------------
def blockers_table(blockers: tuple[Blocker, ...]) -> str:
    if not blockers:
        return "No blocker by the cluster autoscaler's rules."
    rows = ["| node | pod | reason | detail | remedy |", "|---|---|---|---|---|"]
    for b in blockers:
        cells = [b.node, b.pod or "(node)", b.reason, b.detail, b.remedy]
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(rows)


def idle_cost(d: Diagnosis) -> str:
    n = len(d.idle)
    if not n:
        return ""
    p = d.price
    if p is None or p.per_hour is None:
        return f"{n} idle GPU node(s); {p.source if p else 'no price known'}"
    return f"{n} idle GPU node(s) x {p.per_hour:.2f} {p.currency}/h = {n * p.per_hour:.2f} {p.currency}/h"


def summary(d: Diagnosis) -> str:
    if d.error:
        return d.error
    if not d.applies:
        base = d.note
        return base + (f"; {idle_cost(d)}" if d.idle else "")
    if not d.busy and not d.idle:
        return f"GPU pool {d.pool} is at zero nodes"
    parts = []
    if d.stuck:
        parts.append(", ".join(f"{n} idle for {d.idle_for[n] / 60:.0f} min (grace {d.grace_s / 60:.0f} min)"
                               for n in d.stuck))
    held = sorted({b.node for b in d.blockers})
    if held:
        parts.append("cannot scale down: " + "; ".join(
            f"{node}: " + ", ".join(f"{b.pod or 'node'} ({b.reason})" for b in d.blockers if b.node == node)
            for node in held))
    free = [n for n in d.idle if n not in held and n not in d.stuck]
    if free:
        parts.append(f"{', '.join(free)} idle with no blocker: the autoscaler removes it after its 10-minute window")
    if d.busy:
        parts.append(f"{len(d.busy)} GPU node(s) running GPU pods")
    cost = idle_cost(d)
    return "; ".join(parts) + (f"; {cost}" if cost and d.failing else "")


def metadata(d: Diagnosis) -> dict:
    from dagster import MetadataValue

    meta: dict = {"pool": d.pool, "idle_nodes": ", ".join(d.idle), "busy_nodes": ", ".join(d.busy)}
    if d.error:
        meta["error"] = d.error
    if d.idle:
        meta["blockers"] = MetadataValue.md(blockers_table(d.blockers))
        meta["blocker_pods"] = ", ".join(f"{b.pod} ({b.reason})" for b in d.blockers if b.pod)
        meta["blocker_reasons"] = ", ".join(sorted({b.reason for b in d.blockers}))
        meta["idle_cost"] = idle_cost(d)
        meta["price_source"] = d.price.source if d.price else "no price known"
        if d.price and d.price.per_hour is not None:
            # The currency in the key: the UI plots one series per key, and EUR and USD never mix in one.
            meta[f"node_price_per_hour_{d.price.currency.lower()}"] = d.price.per_hour
    if d.idle_for:
        meta["idle_minutes"] = ", ".join(f"{n}: {s / 60:.1f}" for n, s in sorted(d.idle_for.items()))
        meta["grace_minutes"] = d.grace_s / 60
    remedies = sorted({b.remedy for b in d.blockers if b.remedy})
    if d.stuck and not d.blockers:
        remedies.append("no blocker found by the autoscaler's rules: read the autoscaler's view with kubectl -n "
                        "kube-system describe configmap cluster-autoscaler-status and the node's events")
    if remedies:
        meta["remedy"] = "; ".join(remedies)
    return meta


def check_scales_to_zero(spec: Any, observed: Any, env: EnvConfig) -> Outcome:
    """The `scales_to_zero` check over gpu_pool's observation (its `scale_to_zero` facts)."""
    facts: ScaleToZeroObserved | None = getattr(observed, "scale_to_zero", None)
    if facts is None:
        if getattr(observed, "pool", None) is None and env.is_gke:
            return Outcome(True, f"GPU pool {env.substrate.gpu_pool.name} does not exist yet")
        return Outcome(False, "the GPU nodes were not observed: gpu_pool's observe must collect "
                              "scale_to_zero.observe_scale_to_zero(run, pool)")
    # Stuck by the cluster's own records: idle since its last GPU pod ended (or it was created), past the
    # grace period. The guard applies the same rule with what it saw since (never earlier than busy).
    d = diagnose(facts, facts.quiet_since, facts.observed_at, facts.grace_s) if facts.observed_at else diagnose(facts)
    return Outcome(not d.failing, summary(d), metadata(d))


SCALES_TO_ZERO_CHECK = Check(
    CHECK_NAME,
    "Every idle GPU node can be removed by the cluster autoscaler (no blocker pod, no scale-down-disabled node, "
    "min 0), so the pool returns to zero; names each blocker pod and what the idle node costs per hour.",
    check_scales_to_zero)
