"""Admin verbs that put workloads and scale-down blockers on the sandbox's clusters.

Each creates what the real thing looks like in the API (a Deployment's ReplicaSet-owned pod, a
bare pod, a kube-system pod without a PodDisruptionBudget, ...), so the simulated autoscaler and
gpuplat's scale-to-zero guard both judge them by the same fields a real cluster would show.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..core import ApiError
from ..wire.http import Request, Route
from ..stores.kube import KubeStore, RT_NODE, RT_PDB, RT_POD, RT_REPLICASET
from .autoscaler import DEFAULT_SCALE_DOWN_WINDOW_S, SAFE_TO_EVICT, SCALE_DOWN_DISABLED, _state
from .util import GPU, ensure_namespace, owner_ref, resolve_cluster, running_status, short_hash, write_meta

if TYPE_CHECKING:
    from ..core import SandboxContext as Sandbox

WORKLOAD_LABEL = "sandbox.gpuplat.io/workload"
BLOCKER_LABEL = "sandbox.gpuplat.io/blocker"
BLOCKER_KINDS = ("bare-pod", "kube-system-no-pdb", "local-storage", "safe-to-evict-false", "pdb-zero", "unmovable",
                 "node-scale-down-disabled")
PAUSE_IMAGE = "registry.k8s.io/pause:3.10"


def _replicaset(kube: KubeStore, ns: str, deployment: str, labels: dict, template_spec: dict) -> dict:
    name = f"{deployment}-{short_hash(ns, deployment, kube.cluster_id)}"
    rs = kube.get_object("apps", "replicasets", ns, name)
    if rs is None:
        rs = kube.create(RT_REPLICASET, {
            "metadata": {"name": name, "namespace": ns, "labels": labels,
                         "annotations": {"deployment.kubernetes.io/desired-replicas": "1"}},
            "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels}, "spec": template_spec}},
            "status": {"replicas": 1, "fullyLabeledReplicas": 1, "observedGeneration": 1}}, ns)
    return rs


def _pod(kube: KubeStore, ns: str, name: str, labels: dict, spec: dict, owner: dict | None = None,
         annotations: dict | None = None) -> dict:
    meta: dict = {"name": name, "namespace": ns, "labels": labels}
    if owner is not None:
        meta["ownerReferences"] = [owner_ref(owner)]
    if annotations:
        meta["annotations"] = annotations
    spec = {"restartPolicy": "Always", "terminationGracePeriodSeconds": 30, "schedulerName": "default-scheduler",
            "priority": 0, **spec}
    if kube.get_object("", "pods", ns, name) is not None:
        raise ApiError(409, f'pod "{ns}/{name}" already exists')
    return kube.create(RT_POD, {"metadata": meta, "spec": spec, "status": {"phase": "Pending"}}, ns)


# ---- GPU workloads --------------------------------------------------------------------------------------
def post_gpu_workload(sb: "Sandbox", req: Request):
    """`{cluster, name, namespace?, gpus?, nodeSelector?}`: one pod of a Deployment asking for GPUs.

    The pod is owned by a ReplicaSet (as a Deployment's pod is), requests and limits
    `nvidia.com/gpu`, tolerates the GPU taint and is left Pending for the simulated scheduler.
    """
    body = req.json()
    cid = resolve_cluster(sb, body.get("cluster"))
    name = body.get("name")
    if not name:
        raise ApiError(400, "a GPU workload needs a `name`")
    ns = body.get("namespace") or "default"
    gpus = int(body.get("gpus", 1))
    if gpus < 1:
        raise ApiError(400, "`gpus` must be >= 1")
    kube = sb.kube(cid)
    ensure_namespace(kube, ns)
    labels = {"app": name, WORKLOAD_LABEL: name}
    spec = {"containers": [{"name": "server", "image": "vllm/vllm-openai:latest",
                            "resources": {"requests": {"cpu": "1", "memory": "4Gi", GPU: str(gpus)},
                                          "limits": {GPU: str(gpus)}}}],
            "tolerations": [{"key": GPU, "operator": "Exists", "effect": "NoSchedule"}]}
    if body.get("nodeSelector"):
        spec["nodeSelector"] = dict(body["nodeSelector"])
    rs = _replicaset(kube, ns, name, labels, spec)
    pod_name = f"{rs['metadata']['name']}-{short_hash(rs['metadata']['uid'], n=5)}"
    pod = _pod(kube, ns, pod_name, {**labels, "pod-template-hash": rs["metadata"]["name"].rsplit("-", 1)[-1]},
               spec, owner=rs)
    sb.reconcile()  # let the scheduler / autoscaler react now, as they would within a second
    pod = kube.get_object("", "pods", ns, pod_name) or pod
    return {"cluster": cid, "namespace": ns, "pod": pod_name, "replicaSet": rs["metadata"]["name"],
            "nodeName": (pod.get("spec") or {}).get("nodeName"), "phase": (pod.get("status") or {}).get("phase")}


def delete_gpu_workload(sb: "Sandbox", req: Request):
    """`{cluster, name, namespace?}`: delete the workload's ReplicaSet and pods."""
    body = req.json()
    cid = resolve_cluster(sb, body.get("cluster"))
    name = body.get("name")
    ns = body.get("namespace") or "default"
    kube = sb.kube(cid)
    deleted = []
    for rt in (RT_POD, RT_REPLICASET):
        for obj in kube.list_objects(rt.group, rt.plural, ns):
            if (obj["metadata"].get("labels") or {}).get(WORKLOAD_LABEL) == name:
                kube.delete(rt, ns, obj["metadata"]["name"])
                kube.data["logs"].pop(f"{ns}/{obj['metadata']['name']}", None)
                deleted.append(f"{rt.kind}/{obj['metadata']['name']}")
    if not deleted:
        raise ApiError(404, f"no GPU workload {name!r} in {cid}/{ns}")
    return {"cluster": cid, "namespace": ns, "deleted": deleted}


# ---- scale-down blockers ------------------------------------------------------------------------------
def post_blocker(sb: "Sandbox", req: Request):
    """`{cluster, node, kind}`: put on `node` what blocks the autoscaler's scale-down, the way it looks
    in a real cluster. Kinds: bare-pod, kube-system-no-pdb, local-storage, safe-to-evict-false,
    pdb-zero, unmovable, node-scale-down-disabled. Optional `annotations` go on the pod (e.g.
    `{"cluster-autoscaler.kubernetes.io/safe-to-evict": "true"}`)."""
    body = req.json()
    cid = resolve_cluster(sb, body.get("cluster"))
    node_name, kind = body.get("node"), body.get("kind")
    if kind not in BLOCKER_KINDS:
        raise ApiError(400, f"blocker kind must be one of {', '.join(BLOCKER_KINDS)}, got {kind!r}")
    kube = sb.kube(cid)
    node = kube.get_object("", "nodes", None, node_name or "")
    if node is None:
        raise ApiError(404, f"no node {node_name!r} in sandbox cluster {cid}")
    if kind == "node-scale-down-disabled":
        write_meta(kube, RT_NODE, node, annotations={SCALE_DOWN_DISABLED: "true"})
        return {"cluster": cid, "kind": kind, "node": node_name,
                "objects": [{"kind": "Node", "name": node_name, "annotation": SCALE_DOWN_DISABLED}]}
    suffix = short_hash(node_name, kind, n=5)
    ns = "kube-system" if kind == "kube-system-no-pdb" else "default"
    base = {"kube-system-no-pdb": "metrics-agent", "local-storage": "scratch-cache", "bare-pod": "debug-shell",
            "safe-to-evict-false": "batch-runner", "pdb-zero": "singleton", "unmovable": "node-pinned"}[kind]
    deployment = f"{base}-{suffix}"
    labels = {"app": deployment, BLOCKER_LABEL: kind}
    spec: dict = {"nodeName": node_name, "containers": [{"name": base, "image": PAUSE_IMAGE,
                                                         "resources": {"requests": {"cpu": "10m"}}}],
                  "tolerations": [{"operator": "Exists"}]}
    annotations = dict(body.get("annotations") or {})
    objects = []
    if kind == "local-storage":
        spec["volumes"] = [{"name": "scratch", "emptyDir": {}}]
        spec["containers"][0]["volumeMounts"] = [{"name": "scratch", "mountPath": "/scratch"}]
    elif kind == "safe-to-evict-false":
        annotations.setdefault(SAFE_TO_EVICT, "false")
    elif kind == "unmovable":
        spec["nodeSelector"] = {"kubernetes.io/hostname": node_name}
        spec["tolerations"] = [{"key": GPU, "operator": "Exists", "effect": "NoSchedule"}]
    owner = None
    if kind != "bare-pod":
        template = {k: v for k, v in spec.items() if k != "nodeName"}
        owner = _replicaset(kube, ns, deployment, labels, template)
        objects.append({"kind": "ReplicaSet", "namespace": ns, "name": owner["metadata"]["name"]})
    pod_name = f"{owner['metadata']['name']}-{suffix}" if owner else deployment
    pod = _pod(kube, ns, pod_name, labels, spec, owner=owner, annotations=annotations or None)
    kube.replace(RT_POD, {**pod, "status": running_status(sb, node, pod)}, check_rv=False)
    objects.append({"kind": "Pod", "namespace": ns, "name": pod_name})
    if kind == "pdb-zero":
        pdb_name = f"{deployment}-pdb"
        kube.create(RT_PDB, {"metadata": {"name": pdb_name, "namespace": ns, "labels": {BLOCKER_LABEL: kind}},
                             "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": deployment}}},
                             "status": {"currentHealthy": 1, "desiredHealthy": 1, "disruptionsAllowed": 0,
                                        "expectedPods": 1, "observedGeneration": 1}}, ns)
        objects.append({"kind": "PodDisruptionBudget", "namespace": ns, "name": pdb_name})
    return {"cluster": cid, "kind": kind, "node": node_name, "pod": pod_name, "namespace": ns, "objects": objects}


def delete_blockers(sb: "Sandbox", req: Request):
    """`{cluster, node?}`: remove the blockers this API created (on one node, or everywhere)."""
    body = req.json()
    cid = resolve_cluster(sb, body.get("cluster"))
    kube = sb.kube(cid)
    node_name = body.get("node")
    removed = []
    for pod in kube.list_objects("", "pods"):
        if (pod["metadata"].get("labels") or {}).get(BLOCKER_LABEL) and \
                (node_name is None or (pod.get("spec") or {}).get("nodeName") == node_name):
            meta = pod["metadata"]
            kube.delete(RT_POD, meta["namespace"], meta["name"])
            removed.append(f"Pod/{meta['namespace']}/{meta['name']}")
            app = (meta.get("labels") or {}).get("app")
            for rt in (RT_REPLICASET, RT_PDB):
                for obj in kube.list_objects(rt.group, rt.plural, meta["namespace"]):
                    if (obj["metadata"].get("labels") or {}).get(BLOCKER_LABEL) and (
                            obj["metadata"]["name"].startswith(f"{app}-")):
                        kube.delete(rt, meta["namespace"], obj["metadata"]["name"])
                        removed.append(f"{rt.kind}/{meta['namespace']}/{obj['metadata']['name']}")
    for node in kube.list_objects("", "nodes"):
        if (node_name is None or node["metadata"]["name"] == node_name) and \
                (node["metadata"].get("annotations") or {}).get(SCALE_DOWN_DISABLED):
            write_meta(kube, RT_NODE, node, annotations={SCALE_DOWN_DISABLED: None})
            removed.append(f"Node/{node['metadata']['name']} annotation {SCALE_DOWN_DISABLED}")
    return {"cluster": cid, "removed": removed}


# ---- autoscaler settings and state -------------------------------------------------------------------
def put_settings(sb: "Sandbox", req: Request):
    """`{scaleDownWindowSeconds}`: the simulated autoscaler's scale-down window for this cluster."""
    cid = resolve_cluster(sb, req.match["cluster"])
    body = req.json()
    window = body.get("scaleDownWindowSeconds")
    if not isinstance(window, (int, float)) or isinstance(window, bool) or window < 0:
        raise ApiError(400, "settings needs a non-negative number `scaleDownWindowSeconds`")
    state = _state(sb.kube(cid))
    state["scaleDownWindowSeconds"] = window
    sb.store.mark()
    return {"cluster": cid, "scaleDownWindowSeconds": window}


def get_autoscaler(sb: "Sandbox", req: Request):
    """The simulated autoscaler's view: window, idle nodes (since when, simulated time), blocked nodes."""
    cid = resolve_cluster(sb, req.match["cluster"])
    state = _state(sb.kube(cid))
    return {"cluster": cid, "now": sb.clock.now(),
            "scaleDownWindowSeconds": state.get("scaleDownWindowSeconds", DEFAULT_SCALE_DOWN_WINDOW_S),
            "idleSince": dict(state.get("idleSince") or {}), "blocked": dict(state.get("blocked") or {})}


ADMIN_ROUTES = [
    Route("POST", r"/sandbox/workloads/gpu", post_gpu_workload, "sim.workloads.gpu.add"),
    Route("DELETE", r"/sandbox/workloads/gpu", delete_gpu_workload, "sim.workloads.gpu.delete"),
    Route("POST", r"/sandbox/blockers", post_blocker, "sim.blockers.add"),
    Route("DELETE", r"/sandbox/blockers", delete_blockers, "sim.blockers.delete"),
    Route("PUT", r"/sandbox/kube/(?P<cluster>[^/]+)/settings", put_settings, "sim.settings.put"),
    Route("GET", r"/sandbox/kube/(?P<cluster>[^/]+)/autoscaler", get_autoscaler, "sim.autoscaler.get"),
]
