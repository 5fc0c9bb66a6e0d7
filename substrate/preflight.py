"""GPU node preflight: the GPU Operator's node prerequisites, verified on each GPU node instead of assumed.

A short-lived pod per GPU node (read-only host mounts, tolerating every taint) runs gpuplat's probe
(`gpuplat_probe`, stdlib only); its JSON report comes back through the pod's log and is kept in a
ConfigMap, so observing later reads it without running anything again.
"""

from __future__ import annotations

import json
import time

from .piece import PieceError, Run, wait_until

NAMESPACE = "gpuplat-system"
REPORTS = "gpuplat-preflight"
LABEL = ("app.kubernetes.io/name", "gpuplat-preflight")
POD_TIMEOUT_S = 300
# NFD's PCI label for NVIDIA devices, and the GPU Operator's own: how GPU nodes are known before
# anything advertises nvidia.com/gpu.
GPU_NODE_LABELS = ("feature.node.kubernetes.io/pci-10de.present", "nvidia.com/gpu.present")


def is_gpu_node(node, selector: dict) -> bool:
    if selector:
        return all(node.labels.get(k) == v for k, v in selector.items())
    return int(node.allocatable.get("nvidia.com/gpu", 0) or 0) > 0 or any(
        node.labels.get(label) == "true" for label in GPU_NODE_LABELS)


def probe_pod(node: str, image: str) -> dict:
    short = node.lower().replace(".", "-")[:40]
    host_mounts = [("host-root", "/", "/host")]
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": f"gpuplat-preflight-{short}", "namespace": NAMESPACE,
                     "labels": {LABEL[0]: LABEL[1], "app.kubernetes.io/managed-by": "gpuplat"}},
        "spec": {
            "nodeName": node, "restartPolicy": "Never",
            # GPU nodes carry taints (nvidia.com/gpu, the operator's own): the probe must land anyway.
            "tolerations": [{"operator": "Exists"}],
            "containers": [{
                "name": "probe", "image": image,
                "command": ["python3", "-m", "gpuplat_probe", "--host-root", "/host", "--json"],
                "securityContext": {"readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False},
                "volumeMounts": [{"name": n, "mountPath": m, "readOnly": True} for n, _, m in host_mounts]}],
            "volumes": [{"name": n, "hostPath": {"path": p, "type": "Directory"}} for n, p, _ in host_mounts],
        },
    }


def read_reports(run: Run) -> dict[str, dict]:
    cm = run.conn.kube.get("v1", "ConfigMap", REPORTS, NAMESPACE)
    data = (cm or {}).get("data") or {}
    out = {}
    for node, text in data.items():
        try:
            out[node] = json.loads(text)
        except ValueError:
            continue  # a hand-edited entry: treated as missing, the probe runs again
    return out


def run_preflight(run: Run, nodes: list[str], image: str, timeout: float = POD_TIMEOUT_S) -> dict[str, dict]:
    """Run the probe on each node, store the reports, and remove the pods (they are gpuplat's own)."""
    kube = run.conn.kube
    kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
    reports = read_reports(run)
    for node in nodes:
        pod = probe_pod(node, image)
        name = pod["metadata"]["name"]
        kube.delete_pod(NAMESPACE, name)  # a leftover from an interrupted run
        kube.create(pod)
        run.log.info(f"preflight: probing GPU node {node} with pod {NAMESPACE}/{name}")
        started = time.monotonic()

        def finished():
            live = kube.get("v1", "Pod", name, NAMESPACE) or {}
            phase = (live.get("status") or {}).get("phase", "")
            return phase if phase in ("Succeeded", "Failed") else ""
        phase = wait_until(finished, timeout, f"preflight pod on {node}", run.log)
        if not phase:
            raise PieceError(f"preflight pod on {node} did not finish in {timeout:.0f}s: kubectl -n {NAMESPACE} "
                             f"describe pod {name}")
        log = kube.pod_log(NAMESPACE, name)
        kube.delete_pod(NAMESPACE, name)
        try:
            report = json.loads(log.strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise PieceError(f"preflight on {node} printed no report (pod {phase}): {log[-300:]!r}") from None
        reports[node] = report
        run.log.info(f"preflight on {node}: {'ok' if report.get('ok') else 'FAILED'} after "
                     f"{time.monotonic() - started:.0f}s")
    kube.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": REPORTS, "namespace": NAMESPACE},
                "data": {n: json.dumps(r, sort_keys=True) for n, r in reports.items()}})
    return reports


def failures(reports: dict[str, dict]) -> list[tuple[str, dict]]:
    return [(node, v) for node, r in sorted(reports.items()) for v in r.get("verdicts", [])
            if v.get("status") == "fail"]


def driver_decision(reports: dict[str, dict]) -> bool | None:
    """Whether the operator installs the driver: off when a node has one preinstalled; None when nodes disagree."""
    votes = {r.get("operator_driver_enabled") for r in reports.values()}
    votes.discard(None)
    return votes.pop() if len(votes) == 1 else None


def summary(report: dict) -> dict:
    facts = report.get("facts") or {}
    gpus = facts.get("gpus") or []
    return {"gpu": ", ".join(f"{g.get('product_name')} ({g.get('architecture')}, cc {g.get('compute_capability')})"
                             for g in gpus) or "none",
            "driver": facts.get("driver_version") or "none", "module": facts.get("kernel_module_flavour") or "",
            "kernel": facts.get("kernel_release"), "headers": facts.get("headers_present"),
            "secure_boot": facts.get("secure_boot"), "ok": report.get("ok"),
            "verdicts": "; ".join(f"{v.get('id')} {v.get('status')}: {v.get('message')}"
                                  for v in report.get("verdicts", []))}
