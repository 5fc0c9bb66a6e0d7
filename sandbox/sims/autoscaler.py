"""Simulated kube-scheduler, kubelet start-up and GKE cluster autoscaler (GPU node pools).

- **Scheduler**: a Pending pod without `spec.nodeName` is bound to the first node that matches its
  node selector / required node affinity, tolerates the node's taints and has the free
  `nvidia.com/gpu` it asks for; the simulated kubelet then reports it Running. A pod that fits
  nowhere gets one `FailedScheduling` event (and the `PodScheduled=False` condition).
- **Cluster autoscaler, scale-up**: a pod requesting `nvidia.com/gpu` that fits no node makes the
  autoscaler look for an autoscaled GPU pool whose template node would take it (`gke_nodes.
  pool_node_template`), ask `gke_nodes.gpu_nodes_allowed` (max size, quota, injected stockouts) and grow
  the pool by one node (`gke_nodes.resize_pool`). A refusal is reported once per pod and reason as the
  real autoscaler does: `NotTriggerScaleUp` (no pool could take it, max reached) or `FailedScaleUp`
  (quota, stockout). A successful one posts `TriggeredScaleUp`.
- **Cluster autoscaler, scale-down**: a node of an autoscaled GPU pool with no pod requesting
  `nvidia.com/gpu` is idle; idle for longer than the scale-down window (600 simulated seconds by
  default, `PUT /sandbox/kube/{cluster}/settings`) it is drained and removed, unless the pool's
  min keeps it or a pod on it blocks scale-down by the cluster-autoscaler's rules
  (cluster-autoscaler FAQ, "What types of pods can prevent CA from removing a node?":
  https://github.com/kubernetes/autoscaler/blob/master/cluster-autoscaler/FAQ.md).
  CPU pools are not scaled by this simulation.

State (under the cluster's `data["meta"]["autoscaler"]`): `idleSince` per node, `blocked` (why an
idle node was kept), `events` (which reasons a pod was already told), `scaleUps` in flight.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..core import gke_for_kube_id
from ..stores import gke as gke_store
from ..stores.kube import KubeStore, RT_NODE, RT_POD
from . import gke_nodes
from .disruption import allows_none, covers
from .util import (GPU, GKE_POOL_LABEL, fits_node, gpu_request, kube_clusters,
                   node_gpus, pod_active, record_event, running_status, scan, sim_meta, write_fields, write_status)

if TYPE_CHECKING:
    from ..core import SandboxContext as Sandbox

DEFAULT_SCALE_DOWN_WINDOW_S = 600
MAX_NODE_PROVISION_TIME_S = 900  # the autoscaler's --max-node-provision-time default (15 min)
ACCEL_LABEL = "cloud.google.com/gke-accelerator"
PREFLIGHT_LABEL = ("app.kubernetes.io/name", "gpuplat-preflight")
SAFE_TO_EVICT = "cluster-autoscaler.kubernetes.io/safe-to-evict"
SAFE_TO_EVICT_LOCAL = "cluster-autoscaler.kubernetes.io/safe-to-evict-local-volumes"
SCALE_DOWN_DISABLED = "cluster-autoscaler.kubernetes.io/scale-down-disabled"
MIRROR = "kubernetes.io/config.mirror"
COMPONENT = "cluster-autoscaler"


def _state(kube: KubeStore) -> dict:
    return sim_meta(kube, "autoscaler")


def scale_down_window(kube: KubeStore) -> float:
    return float(_state(kube).get("scaleDownWindowSeconds", DEFAULT_SCALE_DOWN_WINDOW_S))


def _told(sb: "Sandbox", kube: KubeStore, pod: dict, reason: str, message: str, etype: str,
          component: str = COMPONENT) -> None:
    """Post an event about `pod` once per reason (the real components dedupe the same way, by count)."""
    events = _state(kube).setdefault("events", {})
    seen = events.setdefault(pod["metadata"]["uid"], [])
    if reason in seen:
        return
    seen.append(reason)
    sb.store.mark()
    record_event(sb, kube, pod, reason, message, etype, component)


# ---- scheduling ------------------------------------------------------------------------------------
def _gke_pools(sb: "Sandbox", kube: KubeStore, cache: dict) -> tuple[str | None, list[dict]]:
    """(GKE cluster name, its pools) behind a kube cluster; (None, []) off GKE. Read once per pass."""
    pools = cache.setdefault("pools", {})
    if kube.cluster_id not in pools:
        name = gke_for_kube_id(kube.cluster_id)
        found = [pool for _, pool in gke_nodes.node_pools(sb, name)] if name else []
        pools[kube.cluster_id] = (name, found) if found else (None, [])
    return pools[kube.cluster_id]


def scheduler_and_autoscaler(sb: "Sandbox") -> None:
    """Simulation of kube-scheduler, of the kubelet starting bound pods, and of the GKE cluster
    autoscaler for GPU node pools (scale-up on unschedulable GPU pods, scale-down of idle GPU nodes).
    See the module docstring for the rules."""
    cache: dict = {}
    for kube in kube_clusters(sb):
        rv = kube.data["rv"]
        objs = scan(kube, ("", "nodes"), ("", "pods"))
        _schedule(sb, kube, cache, objs[("", "nodes")], objs[("", "pods")])
        if kube.data["rv"] != rv:  # the scheduler bound or scaled something: look again
            objs = scan(kube, ("", "nodes"), ("", "pods"))
        _scale_down(sb, kube, objs[("", "nodes")], objs[("", "pods")])


def _schedule(sb: "Sandbox", kube: KubeStore, cache: dict, node_list: list[dict], pods: list[dict]) -> None:
    nodes = {n["metadata"]["name"]: n for n in node_list}
    used: dict[str, int] = {}
    pending = []
    for pod in pods:
        node_name = (pod.get("spec") or {}).get("nodeName")
        if not pod_active(pod):
            continue
        if node_name:
            used[node_name] = used.get(node_name, 0) + gpu_request(pod)
            phase = (pod.get("status") or {}).get("phase")
            preflight = (pod["metadata"].get("labels") or {}).get(PREFLIGHT_LABEL[0]) == PREFLIGHT_LABEL[1]
            if phase in (None, "Pending") and node_name in nodes and not preflight:
                write_status(kube, RT_POD, pod, running_status(sb, nodes[node_name], pod))  # the kubelet
        else:
            pending.append(pod)
    _forget_gone_pods(sb, kube, pods)
    for pod in pending:
        want = gpu_request(pod)
        fit, reasons = None, {}
        for node in nodes.values():
            ok, why = fits_node(pod, node)
            if ok and want and node_gpus(node) - used.get(node["metadata"]["name"], 0) < want:
                ok, why = False, f"Insufficient {GPU}"
            if ok:
                fit = node
                break
            reasons[why] = reasons.get(why, 0) + 1
        if fit is not None:
            name = fit["metadata"]["name"]
            used[name] = used.get(name, 0) + want
            bound = kube.replace(RT_POD, {**pod, "spec": {**pod["spec"], "nodeName": name},
                                          "status": running_status(sb, fit, pod)}, check_rv=False)
            _told(sb, kube, bound, "Scheduled", f"Successfully assigned {pod['metadata'].get('namespace')}/"
                  f"{pod['metadata']['name']} to {name}", "Normal", "default-scheduler")
            continue
        detail = ", ".join(f"{n} {'node(s) ' if not r.startswith('Insufficient') else ''}{r}"
                           for r, n in sorted(reasons.items()))
        message = f"0/{len(nodes)} nodes are available: {detail or 'no nodes'}."
        _unschedulable(sb, kube, pod, message)
        if want:
            _scale_up(sb, kube, pod, want, cache)


def _unschedulable(sb: "Sandbox", kube: KubeStore, pod: dict, message: str) -> None:
    status = dict(pod.get("status") or {})
    conds = [c for c in status.get("conditions") or [] if c.get("type") != "PodScheduled"]
    prev = next((c for c in status.get("conditions") or [] if c.get("type") == "PodScheduled"), {})
    cond = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message,
            "lastTransitionTime": prev.get("lastTransitionTime") if prev.get("status") == "False"
            else sb.clock.rfc3339(), "lastProbeTime": None}
    status.update(phase="Pending", conditions=[*conds, cond])
    if status != pod.get("status"):
        write_status(kube, RT_POD, pod, status)
    _told(sb, kube, pod, "FailedScheduling", message, "Warning", "default-scheduler")


def _forget_gone_pods(sb: "Sandbox", kube: KubeStore, pods: list[dict]) -> None:
    events = _state(kube).get("events")
    if not events:
        return
    live = {p["metadata"]["uid"] for p in pods}
    gone = [uid for uid in events if uid not in live]
    for uid in gone:
        del events[uid]
    if gone:
        sb.store.mark()


# ---- scale-up ------------------------------------------------------------------------------------------
def _scale_up(sb: "Sandbox", kube: KubeStore, pod: dict, want: int, cache: dict) -> None:

    cluster_name, pools = _gke_pools(sb, kube, cache)
    if cluster_name is None:
        return  # no cluster autoscaler off GKE in this simulation
    state = _state(kube)
    in_flight = state.setdefault("scaleUps", {})
    now = sb.clock.now()
    refusals: list[tuple[str, str]] = []  # (event reason, message part)
    spare = cache.setdefault("spare", {})  # GPUs left on nodes added earlier in this tick
    for pool in pools:
        name = pool["name"]
        if not (pool.get("config") or {}).get("accelerators"):
            continue
        if spare.get(name, 0) >= want and fits_node(pod, gke_nodes.pool_node_template(sb, cluster_name, name))[0]:
            spare[name] -= want
            return
        if not (pool.get("autoscaling") or {}).get("enabled"):
            refusals.append(("NotTriggerScaleUp", f"node pool {name}: autoscaling disabled"))
            continue
        template = gke_nodes.pool_node_template(sb, cluster_name, name)
        ok, why = fits_node(pod, template)
        if ok and node_gpus(template) < want:
            ok, why = False, f"Insufficient {GPU}"
        if not ok:
            refusals.append(("NotTriggerScaleUp", f"node pool {name}: 1 node(s) {why}"))
            continue
        size = gke_nodes.pool_size(sb, cluster_name, name)
        flight = in_flight.get(name)
        if flight and size < flight["target"] and now - flight["at"] < MAX_NODE_PROVISION_TIME_S:
            return  # a node for it is on its way
        if flight:
            del in_flight[name]
            sb.store.mark()
        allowed, reason = gke_nodes.gpu_nodes_allowed(sb, cluster_name, name, 1)
        if not allowed:
            failure = _gce_failure(reason)
            if failure:
                # GKE's own autoscaler: "Node scale up in zones <z> associated with this pod failed: GCE out
                # of resources. Pod is at risk of not being scheduled." (FailedScaleUp, Warning), and the
                # pool carries the StatusCondition (GCE_STOCKOUT / GCE_QUOTA_EXCEEDED) with the message.
                zones = ", ".join(pool.get("locations") or [])
                refusals.append(("FailedScaleUp", f"Node scale up in zones {zones} associated with this pod failed: "
                                                  f"{failure}. Pod is at risk of not being scheduled."))
                gke_nodes.set_pool_conditions(sb, cluster_name, name, reason)
            else:
                refusals.append(("NotTriggerScaleUp", f"node pool {name}: {reason}"))
            continue
        gke_nodes.set_pool_conditions(sb, cluster_name, name, None)
        gke_nodes.resize_pool(sb, cluster_name, name, size + 1)
        spare[name] = spare.get(name, 0) + node_gpus(template) - want
        in_flight[name] = {"target": size + 1, "at": now}
        sb.store.mark()
        _told(sb, kube, pod, "TriggeredScaleUp",
              f"pod triggered scale-up: [{{{name} {size}->{size + 1} (simulated)}}]", "Normal")
        return
    if not refusals:
        refusals.append(("NotTriggerScaleUp", "no GPU node pool with autoscaling enabled"))
    failed = [m for k, m in refusals if k == "FailedScaleUp"]
    if failed:
        _told(sb, kube, pod, "FailedScaleUp", " ".join(failed)[:250], "Warning")
    else:
        _told(sb, kube, pod, "NotTriggerScaleUp",
              "pod didn't trigger scale-up: " + "; ".join(m for _, m in refusals), "Normal")


def _gce_failure(reason: str) -> str | None:
    """GKE autoscaler's words for a scale-up Compute refused (gke-autoscaling events; seen in user logs
    as "... failed: GCE out of resources."); None for a refusal of the autoscaler's own (max size)."""
    if "STOCKOUT" in reason:
        return "GCE out of resources"
    if "quota" in reason.lower():
        return "GCE quota exceeded"
    return None


# ---- scale-down ------------------------------------------------------------------------------------------
def _scale_down(sb: "Sandbox", kube: KubeStore, nodes: list[dict], pods: list[dict]) -> None:

    gpu_nodes = [n for n in nodes if (n["metadata"].get("labels") or {}).get(GKE_POOL_LABEL)
                 and (n["metadata"].get("labels") or {}).get(ACCEL_LABEL)]
    state = _state(kube)
    idle_since: dict = state.get("idleSince") or {}
    if not gpu_nodes and not idle_since:
        return
    cluster_name = gke_store.cluster_for_kube(sb, kube.cluster_id)
    if cluster_name is None:
        return
    pods_by_node: dict[str, list[dict]] = {}
    for pod in pods:
        node_name = (pod.get("spec") or {}).get("nodeName")
        if node_name and pod_active(pod):
            pods_by_node.setdefault(node_name, []).append(pod)
    now = sb.clock.now()
    names = {n["metadata"]["name"] for n in gpu_nodes}
    changed = False
    for gone in [n for n in idle_since if n not in names]:
        del idle_since[gone]
        state.get("blocked", {}).pop(gone, None)
        changed = True
    window = scale_down_window(kube)
    for node in gpu_nodes:
        name = node["metadata"]["name"]
        busy = any(gpu_request(p) for p in pods_by_node.get(name, []))
        if busy:
            if name in idle_since:
                del idle_since[name]
                state.get("blocked", {}).pop(name, None)
                changed = True
            continue
        if name not in idle_since:
            idle_since[name] = now
            changed = True
            continue
        if now - idle_since[name] < window:
            continue
        blocker = _node_blocker(sb, kube, cluster_name, node, pods_by_node.get(name, []))
        if blocker is None:
            _remove(sb, kube, cluster_name, node, pods_by_node.get(name, []))
            del idle_since[name]
            state.get("blocked", {}).pop(name, None)
            changed = True
        elif state.get("blocked", {}).get(name) != blocker:
            state.setdefault("blocked", {})[name] = blocker
            changed = True
    if changed:
        state["idleSince"] = idle_since
        sb.store.mark()


def _node_blocker(sb: "Sandbox", kube: KubeStore, cluster_name: str, node: dict, pods: list[dict]) -> dict | None:
    """Why the autoscaler keeps this idle node: {reason, pod?, message}, or None to remove it."""

    name = node["metadata"]["name"]
    if (node["metadata"].get("annotations") or {}).get(SCALE_DOWN_DISABLED) == "true":
        return {"reason": "ScaleDownDisabledAnnotation",
                "message": f'node {name} is annotated {SCALE_DOWN_DISABLED}: "true"'}
    pool = (node["metadata"].get("labels") or {}).get(GKE_POOL_LABEL, "")
    allowed, why = gke_nodes.gpu_nodes_allowed(sb, cluster_name, pool, -1)
    if not allowed:
        reason = "MinSizeReached" if why.startswith("min node group size") else "NotAutoscaled"
        return {"reason": reason, "message": why}
    pdbs = kube.list_objects("policy", "poddisruptionbudgets")
    others = [n for n in kube.list_objects("", "nodes") if n["metadata"]["name"] != name]
    for pod in pods:
        reason = pod_blocking_reason(pod, pdbs, others)
        if reason:
            meta = pod["metadata"]
            return {"reason": reason, "pod": f"{meta.get('namespace')}/{meta['name']}",
                    "message": f"pod {meta.get('namespace')}/{meta['name']} blocks scale-down: {reason}"}
    return None


def pod_blocking_reason(pod: dict, pdbs: list[dict], other_nodes: list[dict]) -> str | None:
    """The cluster-autoscaler's drain rules for one pod on a node it wants to remove.

    Names are the autoscaler's `drain.BlockingPodReason`s. Mirror pods, DaemonSet pods and
    expendable pods (priority < -10) never block. `safe-to-evict: "true"` lifts the
    controller / kube-system / local-storage rules; a PodDisruptionBudget still applies.
    """
    meta = pod["metadata"]
    spec = pod.get("spec") or {}
    ann = meta.get("annotations") or {}
    if MIRROR in ann:
        return None
    controller = next((o for o in meta.get("ownerReferences") or [] if o.get("controller")), None)
    if controller and controller.get("kind") == "DaemonSet":
        return None
    if int(spec.get("priority") or 0) < -10:
        return None
    safe = ann.get(SAFE_TO_EVICT)
    if safe == "false":
        return "NotSafeToEvictAnnotation"
    matching_pdbs = [p for p in pdbs if covers(p, pod)]
    if safe != "true":
        if controller is None:
            return "NotReplicated"
        if meta.get("namespace") == "kube-system" and not matching_pdbs:
            return "UnmovableKubeSystemPod"
        allowed = {v.strip() for v in ann.get(SAFE_TO_EVICT_LOCAL, "").split(",") if v.strip()}
        for vol in spec.get("volumes") or []:
            local = "hostPath" in vol or ("emptyDir" in vol and (vol.get("emptyDir") or {}).get("medium") != "Memory")
            if local and vol.get("name") not in allowed:
                return "LocalStorageRequested"
    if any(allows_none(pdb) for pdb in matching_pdbs):
        return "NotEnoughPdb"
    if not any(fits_node(pod, n)[0] for n in other_nodes):
        return "NoPlaceToMovePods"
    return None


def _remove(sb: "Sandbox", kube: KubeStore, cluster_name: str, node: dict, pods: list[dict]) -> None:
    """Drain (evict the pods) and delete the node through its pool, as the autoscaler does."""

    name = node["metadata"]["name"]
    pool = (node["metadata"].get("labels") or {}).get(GKE_POOL_LABEL, "")
    record_event(sb, kube, node, "ScaleDown", f"node removed by cluster autoscaler (simulated): idle longer than "
                                               f"{int(scale_down_window(kube))}s", "Normal", COMPONENT)
    for pod in pods:
        meta = pod["metadata"]
        kube.delete(RT_POD, meta.get("namespace"), meta["name"])
        kube.data["logs"].pop(f"{meta.get('namespace')}/{meta['name']}", None)
    size = gke_nodes.pool_size(sb, cluster_name, pool)
    gke_nodes.resize_pool(sb, cluster_name, pool, max(size - 1, 0), prefer_remove=[name])
    # The real autoscaler taints the node ToBeDeletedByClusterAutoscaler first; the node is gone
    # at once here, so nothing observes that intermediate state.
    if kube.get_object("", "nodes", None, name) is not None:  # should not happen; keep the store honest
        write_fields(kube, RT_NODE, node, spec={**(node.get("spec") or {}), "unschedulable": True})
