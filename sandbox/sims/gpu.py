"""Simulated NVIDIA GPU Operator (off GKE) and the simulated kubelet that runs the GPU preflight probe."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from ..stores.kube import KubeStore, RT_CLUSTERPOLICY, RT_DAEMONSET, RT_NODE, RT_POD
from .hosts import host_profile, profile_gpu_count, write_host_root
from .util import (GPU, condition, crd, ensure, ensure_crd, ensure_namespace, image_id, kube_clusters, sim_meta,
                   write_fields, write_meta, write_status)

if TYPE_CHECKING:
    from ..core import SandboxContext as Sandbox

OPERATOR_APP = "nvidia-gpu-operator"
OPERATOR_NS = "gpu-operator"
POLICY_NAME = "cluster-policy"
ROLLOUT_SECONDS = 60
GKE_ACCELERATOR_LABEL = "cloud.google.com/gke-accelerator"
PREFLIGHT_LABEL = ("app.kubernetes.io/name", "gpuplat-preflight")
REPO_ROOT = Path(__file__).resolve().parents[1]
PROBE_TIMEOUT_S = 60

CLUSTERPOLICY_CRD = crd("nvidia.com", "v1", "clusterpolicies", "ClusterPolicy", False, ())
OPERANDS = ("gpu-feature-discovery", "nvidia-container-toolkit-daemonset", "nvidia-device-plugin-daemonset",
            "nvidia-dcgm-exporter", "nvidia-operator-validator")


# ---- helm values of the Application ------------------------------------------------------------
def _deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _set_path(values: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    cur = values
    for p in parts[:-1]:
        nxt = cur.get(p)
        if not isinstance(nxt, dict):
            nxt = cur[p] = {}
        cur = nxt
    cur[parts[-1]] = value


def helm_values(app: dict) -> dict:
    """The chart values an Argo CD Application passes: `values` (YAML text) < `valuesObject` < `parameters`."""
    spec = app.get("spec") or {}
    sources = spec.get("sources") or ([spec["source"]] if spec.get("source") else [])
    source = next((s for s in sources if s.get("chart") == "gpu-operator"), None) or \
        next((s for s in sources if s.get("helm")), None) or {}
    helm = source.get("helm") or {}
    values: dict = {}
    if helm.get("values"):
        try:
            loaded = yaml.safe_load(helm["values"])
        except yaml.YAMLError:
            loaded = None
        if isinstance(loaded, dict):
            values = loaded
    if isinstance(helm.get("valuesObject"), dict):
        values = _deep_merge(values, helm["valuesObject"])
    for param in helm.get("parameters") or []:
        raw = param.get("value")
        value: Any = raw
        if not param.get("forceString") and isinstance(raw, str) and raw.lower() in ("true", "false"):
            value = raw.lower() == "true"
        _set_path(values, param.get("name", ""), value)
    return values


def _enabled(values: dict, component: str, default: bool = True) -> bool:
    val = (values.get(component) or {}).get("enabled", default) if isinstance(values.get(component), dict) else default
    if isinstance(val, str):
        return val.lower() == "true"
    return bool(val)


# ---- the operator -----------------------------------------------------------------------------------
def node_problem(profile: dict, driver_enabled: bool) -> str | None:
    """Why the operator's stack cannot come up on this host, or None when it can."""
    driver = profile.get("driver") or {}
    kernel = (profile.get("kernel") or {}).get("release") or "the running kernel"
    gpu = profile.get("gpu") or {}
    if driver.get("installed"):
        if driver_enabled:
            return (f"nvidia-driver-daemonset: a driver ({driver.get('version', 'unknown version')}) is already "
                    f"loaded on the host, the operator's driver container cannot load its own: set "
                    f"driver.enabled=false")
        return None
    if not driver_enabled:
        return ("nvidia-operator-validator: no NVIDIA driver on the host and driver.enabled=false: nothing "
                "installs one")
    if not (profile.get("kernel") or {}).get("headers"):
        return (f"nvidia-driver-daemonset: kernel headers for {kernel} are not installed, the driver "
                f"cannot be compiled (CrashLoopBackOff)")
    ada = str(gpu.get("computeCapability")) == "8.9" or str(gpu.get("architecture", "")).lower().startswith("ada")
    if ada and profile.get("secureBoot") == "enabled":
        return (f"nvidia-driver-daemonset: Secure Boot is enabled on a host with an Ada GPU "
                f"({gpu.get('model', 'unknown')}): the unsigned kernel module is rejected "
                f"(Key was rejected by service)")
    return None


def gpu_operator(sb: "Sandbox") -> None:
    """Simulation of the NVIDIA GPU Operator deployed by the Argo CD Application `nvidia-gpu-operator`.

    Once that Application is Synced: the ClusterPolicy CRD and `cluster-policy` (reflecting the
    Application's helm values, `driver.enabled` above all) exist; `ROLLOUT_SECONDS` simulated
    seconds later each GPU node's host profile decides whether the operands come up there, and the
    nodes where they do advertise `nvidia.com/gpu` (what the device plugin does). The policy reports
    `ready` only when every GPU node is fine. On GKE nodes the operator's toolkit cannot register
    its runtime with GKE's containerd, so the policy stays `notReady` there.
    """
    for kube in kube_clusters(sb):
        app = kube.get_object("argoproj.io", "applications", "argocd", OPERATOR_APP)
        if app is None or ((app.get("status") or {}).get("sync") or {}).get("status") != "Synced":
            continue
        _reconcile_operator(sb, kube, app)


def _reconcile_operator(sb: "Sandbox", kube: KubeStore, app: dict) -> None:
    values = helm_values(app)
    driver_enabled = _enabled(values, "driver")
    ensure_crd(kube, CLUSTERPOLICY_CRD, {"app.kubernetes.io/component": "gpu-operator"})
    ensure_namespace(kube, OPERATOR_NS)
    spec = {
        "operator": {"defaultRuntime": "containerd"},
        "driver": {"enabled": driver_enabled, **({"version": values["driver"]["version"]}
                                                 if isinstance(values.get("driver"), dict)
                                                 and values["driver"].get("version") else {})},
        "toolkit": {"enabled": _enabled(values, "toolkit")},
        "devicePlugin": {"enabled": _enabled(values, "devicePlugin")},
        "dcgmExporter": {"enabled": _enabled(values, "dcgmExporter")},
        "gfd": {"enabled": _enabled(values, "gfd")},
        "mig": {"strategy": ((values.get("mig") or {}).get("strategy") if isinstance(values.get("mig"), dict)
                             else None) or "single"},
        "daemonsets": {"updateStrategy": "RollingUpdate"},
    }
    state = sim_meta(kube, "gpuOperator")
    now = sb.clock.now()
    policy = kube.get_object("nvidia.com", "clusterpolicies", None, POLICY_NAME)
    if policy is None:
        policy = kube.create(RT_CLUSTERPOLICY, {"metadata": {"name": POLICY_NAME,
                                                             "labels": {"app.kubernetes.io/component": "gpu-operator"}},
                                                "spec": spec})
        state["since"] = now
        sb.store.mark()
    elif policy.get("spec") != spec:
        policy = write_fields(kube, RT_CLUSTERPOLICY, policy, spec=spec)
        state["since"] = now
        sb.store.mark()
    if "since" not in state:  # a policy from an earlier life of the state: its rollout starts now
        state["since"] = now
        sb.store.mark()
    since = state["since"]
    rolled_out = now - since >= ROLLOUT_SECONDS
    gpu_nodes, problems = [], []
    for node in kube.list_objects("", "nodes"):
        labels = node["metadata"].get("labels") or {}
        profile = host_profile(node)
        if labels.get(GKE_ACCELERATOR_LABEL):
            problems.append(f"{node['metadata']['name']}: nvidia-container-toolkit cannot register the nvidia "
                            f"runtime with GKE's containerd (GKE's node image manages the GPU stack: use "
                            f"gpu_stack gke-managed)")
            gpu_nodes.append((node, "toolkit"))
            continue
        if profile is None or not profile.get("gpu"):
            continue
        problem = node_problem(profile, driver_enabled) if rolled_out else "operands starting"
        gpu_nodes.append((node, problem))
        if rolled_out and problem:
            problems.append(f"{node['metadata']['name']}: {problem}")
        if profile is not None and rolled_out:
            _advertise(kube, node, profile, problem is None)
    ready = rolled_out and not problems
    stamp = sb.clock.rfc3339()
    prev = (policy.get("status") or {}).get("conditions")
    if ready:
        cond_ready = condition("Ready", True, "Reconciled", "ClusterPolicy is ready as all resources have been "
                                                            "successfully reconciled", stamp, prev)
        cond_error = condition("Error", False, "Ready", "", stamp, prev)
    elif not rolled_out:
        cond_ready = condition("Ready", False, "OperandNotReady",
                               "ClusterPolicy is not ready: operands are starting (simulated rollout)", stamp, prev)
        cond_error = condition("Error", False, "OperandNotReady", "", stamp, prev)
    else:
        msg = "; ".join(problems)
        cond_ready = condition("Ready", False, "OperandNotReady", f"ClusterPolicy is not ready: {msg}", stamp, prev)
        cond_error = condition("Error", True, "ReconcileFailed", msg, stamp, prev)
    write_status(kube, RT_CLUSTERPOLICY, policy, {"state": "ready" if ready else "notReady",
                                                  "namespace": OPERATOR_NS, "conditions": [cond_ready, cond_error]})
    operands = list(OPERANDS) + (["nvidia-driver-daemonset"] if driver_enabled else [])
    desired = len(gpu_nodes)
    ok = sum(1 for _, p in gpu_nodes if p is None)
    for name in operands:
        ensure(kube, RT_DAEMONSET, _daemonset(name, desired, ok))


def _daemonset(name: str, desired: int, ready: int) -> dict:
    labels = {"app": name, "app.kubernetes.io/part-of": "gpu-operator", "app.kubernetes.io/managed-by": "gpu-operator"}
    return {"apiVersion": "apps/v1", "kind": "DaemonSet",
            "metadata": {"name": name, "namespace": OPERATOR_NS, "labels": labels},
            "spec": {"selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"nodeSelector": {"nvidia.com/gpu.present": "true"},
                                           "containers": [{"name": name, "image": f"nvcr.io/nvidia/{name}"}]}}},
            "status": {"desiredNumberScheduled": desired, "currentNumberScheduled": desired,
                       "numberReady": ready, "numberAvailable": ready, "updatedNumberScheduled": desired,
                       "numberMisscheduled": 0, "observedGeneration": 1}}


def _advertise(kube: KubeStore, node: dict, profile: dict, ok: bool) -> None:
    """The device plugin's `nvidia.com/gpu` capacity and GPU feature discovery's labels."""
    count = profile_gpu_count(profile) if ok else 0
    status = node.get("status") or {}
    alloc, cap = status.get("allocatable") or {}, status.get("capacity") or {}
    want = str(count)
    if (ok or GPU in alloc) and (alloc.get(GPU) != want or cap.get(GPU) != want):
        node = write_fields(kube, RT_NODE, node, status={**status, "allocatable": {**alloc, GPU: want},
                                                         "capacity": {**cap, GPU: want}})
    gpu = profile.get("gpu") or {}
    labels: dict[str, str | None] = {
        "nvidia.com/gpu.present": "true",
        "nvidia.com/gpu.count": want if ok else None,
        "nvidia.com/gpu.product": (gpu.get("model") or "").replace(" ", "-") if ok else None,
        "nvidia.com/gpu.memory": str(gpu.get("memoryMiB", "")) if ok and gpu.get("memoryMiB") else None,
    }
    write_meta(kube, RT_NODE, node, labels=labels)


# ---- the preflight probe ----------------------------------------------------------------------------------
def preflight_pods(sb: "Sandbox") -> None:
    """The simulated kubelet running gpuplat's GPU node preflight pod.

    A pod labelled `app.kubernetes.io/name: gpuplat-preflight`, bound to a node, whose command runs
    `gpuplat_probe` is "run" here: the node's simulated host profile is written out as a fake host
    root, and the *same probe code* runs against it (`python -m gpuplat_probe --host-root DIR
    --json`, as a subprocess from the repository root: the sandbox does not import the probe).
    Its stdout becomes the pod's log and the pod ends Succeeded (Failed when the probe broke).
    """
    for kube in kube_clusters(sb):
        for pod in kube.list_objects("", "pods"):
            meta = pod["metadata"]
            if (meta.get("labels") or {}).get(PREFLIGHT_LABEL[0]) != PREFLIGHT_LABEL[1]:
                continue
            if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
                continue
            node_name = (pod.get("spec") or {}).get("nodeName")
            node = kube.get_object("", "nodes", None, node_name) if node_name else None
            if node is None or not _runs_probe(pod):
                continue
            _run_probe(sb, kube, pod, node)


def _runs_probe(pod: dict) -> bool:
    for c in (pod.get("spec") or {}).get("containers") or []:
        if "gpuplat_probe" in " ".join(str(x) for x in (c.get("command") or []) + (c.get("args") or [])):
            return True
    return False


def _run_probe(sb: "Sandbox", kube: KubeStore, pod: dict, node: dict) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("GPUPLAT_NVIDIA_SMI", "GPUPLAT_HOST_ROOT")}
    env["PYTHONPATH"] = str(REPO_ROOT)
    with tempfile.TemporaryDirectory(prefix="gpuplat-sim-host-") as root:
        write_host_root(root, host_profile(node), node)
        try:
            proc = subprocess.run([sys.executable, "-m", "gpuplat_probe", "--host-root", root, "--json"],
                                  cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=PROBE_TIMEOUT_S,
                                  check=False)
            rc, out, err = proc.returncode, proc.stdout, proc.stderr
        except subprocess.TimeoutExpired:
            rc, out, err = 124, "", f"probe timed out after {PROBE_TIMEOUT_S}s"
        except OSError as exc:
            rc, out, err = 127, "", f"cannot run the probe: {exc}"
    meta = pod["metadata"]
    # The host root was a temporary directory; show the path the pod mounts the host at instead.
    kube.data["logs"][f"{meta.get('namespace')}/{meta['name']}"] = out.replace(root, "/host") + \
        (err if rc != 0 else "")
    now = sb.clock.rfc3339()
    containers = (pod.get("spec") or {}).get("containers") or []
    reason = "Completed" if rc == 0 else "Error"
    write_status(kube, RT_POD, pod, {
        "phase": "Succeeded" if rc == 0 else "Failed", "startTime": now,
        "hostIP": next((a.get("address") for a in (node.get("status") or {}).get("addresses") or []
                        if a.get("type") == "InternalIP"), None),
        "conditions": [{"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
                       {"type": "Initialized", "status": "True", "lastTransitionTime": now},
                       {"type": "Ready", "status": "False", "reason": "PodCompleted", "lastTransitionTime": now}],
        "containerStatuses": [{"name": c.get("name", "probe"), "image": c.get("image", ""),
                               "imageID": image_id(c.get("image", "")), "ready": False,
                               "restartCount": 0, "started": False,
                               "state": {"terminated": {"exitCode": rc, "reason": reason, "startedAt": now,
                                                        "finishedAt": now}}} for c in containers]})
    sb.store.mark()
