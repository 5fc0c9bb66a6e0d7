"""Simulation of the kubelet's node heartbeat: one `coordination.k8s.io/v1` Lease per Node in `kube-node-lease`.

Real kubelets renew their lease every 10 seconds (https://kubernetes.io/docs/concepts/architecture/leases/#node-heart-beats);
the simulation renews it every `RENEW_S` simulated seconds, so an idle sandbox writes little, and
removes the lease of a node that is gone (as the node lifecycle controller's garbage collection does).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..stores.kube import KubeStore, RT_LEASE
from .util import ensure_namespace, kube_clusters, scan, sim_meta

if TYPE_CHECKING:
    from ..core import SandboxContext as Sandbox

NAMESPACE = "kube-node-lease"
LEASE_DURATION_S = 40
RENEW_S = 40.0


def _micro(sb: "Sandbox") -> str:
    return sb.clock.rfc3339().replace("Z", ".000000Z")


def node_leases(sb: "Sandbox") -> None:
    for kube in kube_clusters(sb):
        _leases(sb, kube)


def _leases(sb: "Sandbox", kube: KubeStore) -> None:
    found = scan(kube, ("", "nodes"), ("coordination.k8s.io", "leases"))
    nodes = {n["metadata"]["name"]: n for n in found[("", "nodes")]}
    leases = {l["metadata"]["name"]: l for l in found[("coordination.k8s.io", "leases")]
              if l["metadata"].get("namespace") == NAMESPACE}
    if nodes and not leases:
        ensure_namespace(kube, NAMESPACE)
    now = sb.clock.now()
    renewed = sim_meta(kube, "node_leases")  # node -> simulated time of its last renewal
    for name, node in nodes.items():
        lease = leases.get(name)
        if lease is None:
            owner = {"apiVersion": "v1", "kind": "Node", "name": name, "uid": node["metadata"]["uid"]}
            kube.create(RT_LEASE, {"metadata": {"name": name, "namespace": NAMESPACE, "ownerReferences": [owner]},
                                   "spec": {"holderIdentity": name, "leaseDurationSeconds": LEASE_DURATION_S,
                                            "renewTime": _micro(sb)}}, NAMESPACE)
            renewed[name] = now
            continue
        if now - renewed.get(name, 0.0) >= RENEW_S:
            renewed[name] = now
            sb.store.mark()
            kube.replace(RT_LEASE, {**lease, "spec": {**lease["spec"], "renewTime": _micro(sb)}}, check_rv=False)
    for name in leases.keys() - nodes.keys():
        kube.delete(RT_LEASE, NAMESPACE, name)
        renewed.pop(name, None)
