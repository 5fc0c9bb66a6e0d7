"""Simulation of GKE node pools' managed instance groups: each pool's nodes as Node objects.

Nodes are named, labelled, tainted and sized the way GKE's are; `resize_pool` is what the managed
instance group does when the autoscaler or an operation resizes it, and `gpu_nodes_allowed` is what
the cluster autoscaler asks before it does.
"""

from __future__ import annotations

import copy
import uuid
from typing import Iterable, TYPE_CHECKING

from ..core import ApiError, kube_id_for_gke
from ..stores.compute import capacity_problem
from ..stores.gke import ACCEL_LABEL, DEFAULT_VERSION, DEVICE_PLUGINS, GPU_RESOURCE, device_plugin_for, GPU_TAINT, POOL_LABEL, RUNNING_STATES, TAINT_EFFECTS, accelerator, node_allocatable, find_pool, is_spot, machine_shape, name_hash, not_found, pool_limits, region_of, resolve_cluster_key, split_cluster_key, state, to_ki
from ..stores.kube import BUILTIN_TYPES, KubeStore

if TYPE_CHECKING:
    from ..core import SandboxContext as Sandbox

RT_NODE = next(rt for rt in BUILTIN_TYPES if rt.plural == "nodes")

RT_POD = next(rt for rt in BUILTIN_TYPES if rt.plural == "pods")

RT_DAEMONSET = next(rt for rt in BUILTIN_TYPES if rt.plural == "daemonsets")


def k8s_taints(pool: dict) -> list[dict]:
    out = []
    for t in pool.get("config", {}).get("taints", []):
        taint = {"key": t.get("key", ""), "effect": TAINT_EFFECTS.get(t.get("effect", ""), t.get("effect", ""))}
        if t.get("value"):
            taint["value"] = t["value"]
        out.append(taint)
    if accelerator(pool)[0]:
        # GKE taints GPU nodes itself (https://cloud.google.com/kubernetes-engine/docs/how-to/gpus).
        out.append(dict(GPU_TAINT))
    return out


def node_labels(project: str, cluster_name: str, pool: dict, zone: str, node_name: str) -> dict:
    cfg = pool.get("config", {})
    machine = cfg.get("machineType", "e2-medium")
    region = region_of(zone)
    labels = {
        "beta.kubernetes.io/arch": "amd64",
        "beta.kubernetes.io/instance-type": machine,
        "beta.kubernetes.io/os": "linux",
        "cloud.google.com/gke-boot-disk": cfg.get("diskType", "pd-balanced"),
        "cloud.google.com/gke-container-runtime": "containerd",
        "cloud.google.com/gke-cpu-scaling-level": str(machine_shape(machine)[0]),
        "cloud.google.com/gke-logging-variant": "DEFAULT",
        "cloud.google.com/gke-max-pods-per-node": str(pool.get("maxPodsConstraint", {}).get("maxPodsPerNode", "110")),
        "cloud.google.com/gke-nodepool": pool["name"],
        "cloud.google.com/gke-os-distribution": "cos",
        "cloud.google.com/gke-provisioning": "spot" if is_spot(pool) else "standard",
        "cloud.google.com/machine-family": machine.split("-")[0],
        "cloud.google.com/private-node": "false",
        "failure-domain.beta.kubernetes.io/region": region,
        "failure-domain.beta.kubernetes.io/zone": zone,
        "kubernetes.io/arch": "amd64",
        "kubernetes.io/hostname": node_name,
        "kubernetes.io/os": "linux",
        "node.kubernetes.io/instance-type": machine,
        "topology.gke.io/zone": zone,
        "topology.kubernetes.io/region": region,
        "topology.kubernetes.io/zone": zone,
    }
    if is_spot(pool):
        labels["cloud.google.com/gke-spot"] = "true"
    accel, _ = accelerator(pool)
    if accel:
        labels[ACCEL_LABEL] = accel
        labels["cloud.google.com/gke-gpu"] = "true"
        drv = (cfg.get("accelerators", [{}])[0].get("gpuDriverInstallationConfig", {}) or {}).get("gpuDriverVersion")
        if drv and drv != "INSTALLATION_DISABLED":
            labels["cloud.google.com/gke-gpu-driver-version"] = drv.lower()
    labels.update(cfg.get("labels", {}))
    return labels


def node_capacity(pool: dict) -> tuple[dict, dict]:
    cfg = pool.get("config", {})
    cpus, memory = machine_shape(cfg.get("machineType", "e2-medium"))
    pods = str(pool.get("maxPodsConstraint", {}).get("maxPodsPerNode", "110"))
    disk_gb = int(cfg.get("diskSizeGb", 100))
    alloc_cpu, alloc_mem = node_allocatable(cpus, memory)
    capacity = {"cpu": str(cpus), "ephemeral-storage": f"{disk_gb * 1024 * 1024 - 2 * 1024 * 1024}Ki",
                "hugepages-1Gi": "0", "hugepages-2Mi": "0", "memory": f"{to_ki(memory)}Ki", "pods": pods}
    allocatable = {**capacity, "cpu": alloc_cpu, "memory": alloc_mem,
                   "ephemeral-storage": str(int(disk_gb * 0.85 * 1024 ** 3))}
    accel, count = accelerator(pool)
    if accel:
        capacity[GPU_RESOURCE] = allocatable[GPU_RESOURCE] = str(count)
    return capacity, allocatable


def node_object(sb: "Sandbox", cluster_key: str, cluster: dict, pool: dict, zone: str, name: str,
                 ip: str) -> dict:
    project, _, cluster_name = split_cluster_key(cluster_key)
    capacity, allocatable = node_capacity(pool)
    now = sb.clock.rfc3339()
    version = pool.get("version", cluster.get("currentNodeVersion", DEFAULT_VERSION))
    conditions = [
        {"type": t, "status": "False", "reason": r, "message": m, "lastHeartbeatTime": now,
         "lastTransitionTime": now}
        for t, r, m in (("MemoryPressure", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
                        ("DiskPressure", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                        ("PIDPressure", "KubeletHasSufficientPID", "kubelet has sufficient PID available"))
    ]
    conditions.append({"type": "Ready", "status": "True", "reason": "KubeletReady",
                       "message": "kubelet is posting ready status", "lastHeartbeatTime": now,
                       "lastTransitionTime": now})
    uid = name_hash(cluster_key, name, n=32)
    spec_extra = {"taints": k8s_taints(pool)} if k8s_taints(pool) else {}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": node_labels(project, cluster_name, pool, zone, name),
            "annotations": {
                "container.googleapis.com/instance_id": str(int(uid[:15], 16)),
                "node.alpha.kubernetes.io/ttl": "0",
                "node.gke.io/last-applied-node-labels": ",".join(
                    f"{k}={v}" for k, v in sorted(pool.get("config", {}).get("labels", {}).items())),
                "volumes.kubernetes.io/controller-managed-attach-detach": "true",
            },
        },
        "spec": {
            "podCIDR": f"10.{64 + int(ip.split('.')[2]) % 4}.{int(ip.split('.')[3])}.0/24",
            "podCIDRs": [f"10.{64 + int(ip.split('.')[2]) % 4}.{int(ip.split('.')[3])}.0/24"],
            "providerID": f"gce://{project}/{zone}/{name}",
            **spec_extra,
        },
        "status": {
            "addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}],
            "allocatable": allocatable,
            "capacity": capacity,
            "conditions": conditions,
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "architecture": "amd64",
                "bootID": str(uuid.UUID(uid)),
                "containerRuntimeVersion": "containerd://1.7.27",
                "kernelVersion": "6.6.97+",
                "kubeProxyVersion": f"v{version}",
                "kubeletVersion": f"v{version}",
                "machineID": name_hash(name, "machine", n=32),
                "operatingSystem": "linux",
                "osImage": "Container-Optimized OS from Google",
                "systemUUID": str(uuid.UUID(name_hash(name, "system", n=32))),
            },
        },
    }


def kube_of(sb: "Sandbox", cluster_key: str) -> KubeStore:
    return sb.kube(kube_id_for_gke(*split_cluster_key(cluster_key)))


def pool_nodes(kube: KubeStore, pool_name: str) -> list[dict]:
    return [n for n in kube.list_objects("", "nodes")
            if n["metadata"].get("labels", {}).get(POOL_LABEL) == pool_name]


def next_ip(sb: "Sandbox") -> str:
    gke = state(sb)
    gke["seq"] += 1
    n = gke["seq"]
    return f"10.128.{(n // 250) % 250}.{n % 250 + 2}"


def update_device_plugin(kube: KubeStore) -> None:
    """Each GPU node counts for the one device-plugin DaemonSet of its size and image."""
    counts = {name: 0 for name in DEVICE_PLUGINS}
    for node in kube.list_objects("", "nodes"):
        labels = node["metadata"].get("labels", {})
        if ACCEL_LABEL in labels:
            gpus = int(((node.get("status") or {}).get("capacity") or {}).get(GPU_RESOURCE, 1) or 1)
            counts[device_plugin_for(gpus, labels.get("cloud.google.com/gke-os-distribution", "cos"))] += 1
    for name, n in counts.items():
        ds = kube.get_object("apps", "daemonsets", "kube-system", name)
        if ds is None:
            continue
        status = {"currentNumberScheduled": n, "desiredNumberScheduled": n, "numberAvailable": n,
                  "numberMisscheduled": 0, "numberReady": n, "observedGeneration": 1, "updatedNumberScheduled": n}
        if n == 0:
            status.pop("numberAvailable")
        if ds.get("status") != status:
            kube.replace(RT_DAEMONSET, {**ds, "status": status}, check_rv=False)


def sync_cluster_counts(sb: "Sandbox", cluster_key: str) -> None:
    cl = state(sb)["clusters"].get(cluster_key)
    if cl is None:
        return
    kube = kube_of(sb, cluster_key)
    pool_names = {p["name"] for p in cl.get("nodePools", [])}
    count = sum(1 for n in kube.list_objects("", "nodes")
                if n["metadata"].get("labels", {}).get(POOL_LABEL) in pool_names)
    if cl.get("currentNodeCount", 0) != count:
        if count:
            cl["currentNodeCount"] = count
        else:
            cl.pop("currentNodeCount", None)
        sb.store.mark()
    update_device_plugin(kube)


def sync_nodes(sb: "Sandbox", cluster_key: str, pool: dict) -> None:
    """Re-apply a pool's labels, taints, shape and version to its existing nodes (as GKE propagates them).

    Labels and taints that someone else put on a node (kubectl, another controller) are kept;
    those this pool set before and no longer sets are removed.
    """
    cl = state(sb)["clusters"][cluster_key]
    kube = kube_of(sb, cluster_key)
    internal = state(sb)["internal"].setdefault(f"{cluster_key}/nodePools/{pool['name']}", {})
    old_labels = set(internal.get("labels", []))
    old_taints = {(t["key"], t["effect"]) for t in internal.get("taints", [])}
    for node in pool_nodes(kube, pool["name"]):
        meta = node["metadata"]
        zone = meta["labels"].get("topology.kubernetes.io/zone", pool["locations"][0])
        ip = next((a["address"] for a in node["status"].get("addresses", []) if a["type"] == "InternalIP"),
                  "10.128.0.2")
        fresh = node_object(sb, cluster_key, cl, pool, zone, meta["name"], ip)
        labels = {k: v for k, v in meta.get("labels", {}).items() if k not in old_labels}
        labels.update(fresh["metadata"]["labels"])
        managed = {(t["key"], t["effect"]) for t in fresh["spec"].get("taints", [])}
        taints = [t for t in node["spec"].get("taints", [])
                  if (t["key"], t["effect"]) not in old_taints and (t["key"], t["effect"]) not in managed]
        taints = fresh["spec"].get("taints", []) + taints
        new = copy.deepcopy(node)
        new["metadata"]["labels"] = labels
        new["metadata"]["annotations"] = {**meta.get("annotations", {}), **fresh["metadata"]["annotations"]}
        new["spec"]["taints"] = taints
        if not taints:
            new["spec"].pop("taints", None)
        new["status"]["capacity"] = fresh["status"]["capacity"]
        new["status"]["allocatable"] = fresh["status"]["allocatable"]
        new["status"]["nodeInfo"] = fresh["status"]["nodeInfo"]
        kube.replace(RT_NODE, new, check_rv=False)
    sample = node_object(sb, cluster_key, cl, pool, pool["locations"][0], "template", "10.128.0.2")
    internal["labels"] = sorted(sample["metadata"]["labels"])
    internal["taints"] = sample["spec"].get("taints", [])
    sb.store.mark()
    sync_cluster_counts(sb, cluster_key)


def node_pools(sb: "Sandbox", only: str | None = None) -> list[tuple[str, dict]]:
    """Every node pool of every RUNNING (or RECONCILING) cluster whose pool is RUNNING/RECONCILING (of
    cluster `only`, a full resource name, when given).

    Returns `(cluster_name, pool)` pairs: `cluster_name` is the full resource name
    `projects/P/locations/L/clusters/C` (pass it back to `resize_pool`, `pool_size`,
    `gpu_nodes_allowed`; `kube_id_for_gke` gives its Kubernetes cluster id), `pool` a deep copy of
    the stored NodePool JSON exactly as `get_node_pool` would show it with enum names (camelCase,
    int64 as strings: read `int(pool["autoscaling"].get("maxNodeCount", 0))`). Autoscaling limits
    `minNodeCount`/`maxNodeCount` are per zone (times `len(pool["locations"])`); `totalMinNodeCount`/
    `totalMaxNodeCount` are pool-wide. Finishes operations whose time is up first.
    """
    out = []
    clusters = state(sb)["clusters"]
    chosen = sorted(clusters.items()) if only is None else [(only, clusters[only])] if only in clusters else []
    for key, cl in chosen:
        if cl.get("status") not in RUNNING_STATES:
            continue
        for pool in cl.get("nodePools", []):
            if pool.get("status") in RUNNING_STATES:
                out.append((key, copy.deepcopy(pool)))
    return out


def pool_size(sb: "Sandbox", cluster_name: str, pool_name: str) -> int:
    """Current number of nodes of a pool (all zones), counted from its Node objects."""
    key = resolve_cluster_key(sb, cluster_name)
    return len(pool_nodes(kube_of(sb, key), pool_name))


def pool_node_template(sb: "Sandbox", cluster_name: str, pool_name: str) -> dict:
    """The Node a scale-up of this pool would add (labels, taints, allocatable), not stored.

    The cluster autoscaler decides whether a pending pod would fit a pool from such a template node.
    """
    key = resolve_cluster_key(sb, cluster_name)
    cl = state(sb)["clusters"][key]
    pool = find_pool(cl, pool_name)
    if pool is None:
        raise not_found(f"{key}/nodePools/{pool_name}")
    name = f"template-{pool_name}"
    return node_object(sb, key, cl, pool, pool["locations"][0], name, "10.128.0.2")


def gpu_nodes_allowed(sb: "Sandbox", cluster_name: str, pool_name: str, extra: int) -> tuple[bool, str]:
    """May the cluster autoscaler change this pool by `extra` nodes now? Returns (allowed, reason).

    `cluster_name` is a full resource name (`projects/P/locations/L/clusters/C`, as `node_pools`
    returns it), a kube cluster id (`gke_P_L_C`) or a bare cluster name. `extra` > 0 asks about a
    scale-up by that many nodes, `extra` < 0 about removing that many. Checked, in the order the
    cluster-autoscaler hits them:

    - the pool exists, is RUNNING (or RECONCILING) and has autoscaling enabled (the autoscaler never
      touches a pool without it);
    - size limits: scale-up stays within the pool's max (`maxNodeCount` per zone times its zones,
      or `totalMaxNodeCount`), scale-down stays at or above its min (same rule);
    - for scale-ups only, a stockout injected with `POST /sandbox/gke/stockouts` for the pool's
      accelerator in every one of its zones ("GCE_STOCKOUT: ZONE_RESOURCE_POOL_EXHAUSTED ...");
    - for scale-ups only, Compute quota (`compute.quota`): the regional accelerator metric
      (`NVIDIA_L4_GPUS`, `PREEMPTIBLE_...` for spot pools), `GPUS_ALL_REGIONS`, regional `CPUS`
      (or `PREEMPTIBLE_CPUS`) and `CPUS_ALL_REGIONS`, usage counted from the live simulated nodes.

    The reason is one sentence a pod event or a check can show as is (for a refusal it starts with
    what failed: "max node group size reached", "min node group size reached", "GCE_STOCKOUT",
    "Insufficient regional quota", ...). This reads only; `resize_pool` makes the change.
    """
    try:
        key = resolve_cluster_key(sb, cluster_name)
    except ApiError as err:
        return False, f"cluster {cluster_name} not found ({err.message})"
    cl = state(sb)["clusters"][key]
    pool = find_pool(cl, pool_name)
    if pool is None:
        return False, f"node pool {pool_name} not found in {key}"
    if cl.get("status") not in RUNNING_STATES or pool.get("status") not in RUNNING_STATES:
        return False, (f"node pool {pool_name} is {pool.get('status', 'STATUS_UNSPECIFIED')} in cluster "
                       f"{cl.get('status', 'STATUS_UNSPECIFIED')}: not ready for scaling")
    limits = pool_limits(pool)
    if limits is None:
        return False, f"autoscaling is disabled on node pool {pool_name}"
    lo, hi = limits
    current = pool_size(sb, key, pool_name)
    if extra > 0 and current + extra > hi:
        return False, (f"max node group size reached: node pool {pool_name} has {current} node(s), "
                       f"its autoscaling max is {hi}")
    if extra < 0 and current + extra < lo:
        return False, (f"min node group size reached: node pool {pool_name} has {current} node(s), "
                       f"its autoscaling min is {lo}")
    problem = capacity_problem(sb, split_cluster_key(key)[0], pool, extra)
    if problem:
        return False, problem
    return True, (f"node pool {pool_name} can go from {current} to {current + extra} node(s) "
                  f"(autoscaling {lo}..{hi})")


def set_pool_conditions(sb: "Sandbox", cluster_name: str, pool_name: str, problem: str | None) -> None:
    """The pool's `conditions` after a scale-up attempt: the Compute failure as a StatusCondition
    (GCE_STOCKOUT / GCE_QUOTA_EXCEEDED, container/v1 cluster_service.proto), cleared once one succeeds."""
    key = resolve_cluster_key(sb, cluster_name)
    pool = find_pool(state(sb)["clusters"][key], pool_name)
    if pool is None:
        return
    if problem is None:
        if pool.get("conditions"):
            pool.pop("conditions")
            sb.store.mark()
        return
    code = "GCE_STOCKOUT" if "STOCKOUT" in problem else "GCE_QUOTA_EXCEEDED"
    wanted = [{"code": code, "message": problem, "canonicalCode": "RESOURCE_EXHAUSTED"}]
    if pool.get("conditions") != wanted:
        pool["conditions"] = wanted
        sb.store.mark()


def resize_pool(sb: "Sandbox", cluster_name: str, pool_name: str, count: int,
                prefer_remove: Iterable[str] = ()) -> list[str]:
    """Set a pool's current size to `count` nodes (all zones together); returns its node names.

    Creates Node objects the way GKE names and labels them (new nodes go to the pool's zone with
    the fewest nodes) or deletes nodes: first those named in `prefer_remove`, then nodes no pod is
    bound to, then the newest. Pods bound to a deleted node are left for the kube side to collect.
    It checks neither limits nor quota (ask `gpu_nodes_allowed` first) and creates no operation:
    it is what the managed instance group does when the autoscaler or an operation resizes it.
    """
    key = resolve_cluster_key(sb, cluster_name)
    cl = state(sb)["clusters"][key]
    pool = find_pool(cl, pool_name)
    if pool is None:
        raise not_found(f"{key}/nodePools/{pool_name}")
    if count < 0:
        raise ApiError(400, f"node count must be >= 0, got {count}")
    kube = kube_of(sb, key)
    nodes = pool_nodes(kube, pool_name)
    zones = pool.get("locations") or [cl["location"]]
    if count > len(nodes):
        per_zone = {z: 0 for z in zones}
        for n in nodes:
            z = n["metadata"]["labels"].get("topology.kubernetes.io/zone")
            if z in per_zone:
                per_zone[z] += 1
        project, _, cname = split_cluster_key(key)
        prefix = f"gke-{cname}-{pool_name}"[:48].rstrip("-")
        for _ in range(count - len(nodes)):
            zone = min(zones, key=lambda z: per_zone[z])
            per_zone[zone] += 1
            while True:
                name = f"{prefix}-{name_hash(key, pool_name, zone)}-{uuid.uuid4().hex[:4]}"
                if kube.get_object("", "nodes", None, name) is None:
                    break
            kube.create(RT_NODE, node_object(sb, key, cl, pool, zone, name, next_ip(sb)))
    elif count < len(nodes):
        busy = {p.get("spec", {}).get("nodeName") for p in kube.list_objects("", "pods")}
        prefer = list(prefer_remove)
        order = sorted(nodes, key=lambda n: (n["metadata"]["name"] not in prefer,
                                             n["metadata"]["name"] in busy,
                                             -int(n["metadata"]["resourceVersion"])))
        for node in order[: len(nodes) - count]:
            kube.delete(RT_NODE, None, node["metadata"]["name"])
    internal = state(sb)["internal"].setdefault(f"{key}/nodePools/{pool_name}", {})
    if "labels" not in internal:
        sample = node_object(sb, key, cl, pool, zones[0], "template", "10.128.0.2")
        internal["labels"] = sorted(sample["metadata"]["labels"])
        internal["taints"] = sample["spec"].get("taints", [])
    sb.store.mark()
    sync_cluster_counts(sb, key)
    return sorted(n["metadata"]["name"] for n in pool_nodes(kube, pool_name))
