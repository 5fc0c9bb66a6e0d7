"""What a GKE cluster's controllers create in the project, and what of it outlives the cluster.

Simulation, standing in for two real controllers:

- GKE's Gateway controller: a Gateway (gateway.networking.k8s.io) gets a load balancer, here a
  regional forwarding rule and its reserved address named `gkegw1-<hash>-<namespace>-<name>`. When
  the Gateway is deleted the controller releases them, `LB_RELEASE_S` simulated seconds later (the
  seed's pause waits for forwarding rules and addresses to clear: its "LB footgun"). A cluster deleted
  with its Gateways still there leaves them behind, billed, until someone deletes them.
- the Compute Engine persistent disk CSI driver (pd.csi.storage.gke.io): a PersistentVolumeClaim gets
  a disk `pvc-<uid>` in the cluster's zone; deleting the claim deletes the disk (reclaimPolicy
  Delete). A deleted cluster leaves its disks behind (the seed's audit deletes `name~pvc` disks).

The resources live in `stores.compute_resources`, listed and deleted through the Compute API.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..stores import compute_resources as resources
from .util import kube_clusters, short_hash

if TYPE_CHECKING:
    from ..core import SandboxContext as Sandbox

LB_RELEASE_S = 120.0
GATEWAY = ("gateway.networking.k8s.io", "gateways")
PD_CSI = "pd.csi.storage.gke.io"


def _owners(sb: "Sandbox") -> dict:
    """resource key -> {cluster, kind, namespace, name, items: [[collection, scope, name]], release_at}."""
    return sb.store.section("compute").setdefault("owners", {})


def _region(location: str) -> str:
    return location if location.count("-") == 1 else location.rsplit("-", 1)[0]


def gke_cloud_leftovers(sb: "Sandbox") -> None:
    owners = _owners(sb)
    now = sb.clock.now()
    live_clusters = set()
    for kube in kube_clusters(sb):
        if not kube.cluster_id.startswith("gke_"):
            continue
        live_clusters.add(kube.cluster_id)
        _, project, location, cluster = kube.cluster_id.split("_", 3)
        present = set()
        for gw in kube.list_objects(*GATEWAY):
            ns, name = gw["metadata"].get("namespace", "default"), gw["metadata"]["name"]
            key = f"{kube.cluster_id}/Gateway/{ns}/{name}"
            present.add(key)
            if key not in owners:
                lb = f"gkegw1-{short_hash(cluster, ns, name)}-{ns}-{name}"[:63]
                scope = f"regions/{_region(location)}"
                resources.put(sb, project, "addresses", scope, {
                    "name": lb, "address": f"34.{int(short_hash(lb), 16) % 250}.0.10", "addressType": "EXTERNAL",
                    "status": "IN_USE", "networkTier": "PREMIUM", "description": f"Gateway {ns}/{name} of {cluster}"})
                resources.put(sb, project, "forwardingRules", scope, {
                    "name": lb, "IPProtocol": "TCP", "portRange": "443-443", "loadBalancingScheme": "EXTERNAL_MANAGED",
                    "description": f"Gateway {ns}/{name} of {cluster}"})
                owners[key] = {"cluster": kube.cluster_id, "project": project, "release_at": None,
                               "items": [["addresses", scope, lb], ["forwardingRules", scope, lb]]}
                sb.store.mark()
        for pvc in kube.list_objects("", "persistentvolumeclaims"):
            meta = pvc["metadata"]
            key = f"{kube.cluster_id}/PersistentVolumeClaim/{meta.get('namespace', 'default')}/{meta['name']}"
            present.add(key)
            if key not in owners:
                disk = f"pvc-{meta.get('uid') or short_hash(key)}"
                size = str((((pvc.get("spec") or {}).get("resources") or {}).get("requests") or {}).get("storage", "10Gi"))
                gib = int(float(size.rstrip("Gi") or 10)) if size.endswith("Gi") else 10
                scope = f"zones/{location if location.count('-') == 2 else location + '-a'}"
                resources.put(sb, project, "disks", scope, {
                    "name": disk, "sizeGb": str(gib), "status": "READY", "type": f"{scope}/diskTypes/pd-balanced",
                    "description": f'{{"kubernetes.io/created-for/pvc/name":"{meta["name"]}"}}'})
                owners[key] = {"cluster": kube.cluster_id, "project": project, "release_at": None,
                               "items": [["disks", scope, disk]], "immediate": True}
                sb.store.mark()
        for key, rec in list(owners.items()):
            if rec["cluster"] != kube.cluster_id or key in present:
                continue
            if rec["release_at"] is None:
                rec["release_at"] = now + (0 if rec.get("immediate") else LB_RELEASE_S)
                sb.store.mark()
            if now >= rec["release_at"]:
                for collection, scope, name in rec["items"]:
                    resources.remove(sb, rec["project"], collection, scope, name)
                owners.pop(key)
                sb.store.mark()
    # A deleted cluster's controllers are gone with it: what they had not released is orphaned.
    for key, rec in list(owners.items()):
        if rec["cluster"] not in live_clusters:
            owners.pop(key)
            sb.store.mark()
