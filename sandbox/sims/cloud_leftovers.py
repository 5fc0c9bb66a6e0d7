"""What a GKE cluster's controllers create in the project, and what of it outlives the cluster.

Simulation, standing in for two real controllers:

- GKE's Gateway controller: a Gateway (gateway.networking.k8s.io) gets a load balancer, here a
  forwarding rule and its reserved address named `gkegw1-<4>-<namespace>-<name>-<12>` (global for a
  `...-global-...` GatewayClass, else regional), and the Gateway says which in its annotations
  `networking.gke.io/forwarding-rules` and `networking.gke.io/addresses` (`/projects/<number>/<scope>/
  <collection>/<name>`) and its address in `status.addresses`, as GKE's controller writes them (seen
  on real Gateways; the controller itself is not public). When the Gateway is deleted the controller
  releases them, `LB_RELEASE_S` simulated seconds later (the seed's pause waits for forwarding rules
  and addresses to clear: its "LB footgun"). A cluster deleted with its Gateways still there leaves
  them behind, billed, until someone deletes them.
- the Compute Engine persistent disk CSI driver (pd.csi.storage.gke.io): a PersistentVolumeClaim gets
  a disk `pvc-<uid>` in the cluster's zone (external-provisioner's `makeVolumeName`) and a
  PersistentVolume of the same name bound to it, whose `spec.csi.volumeHandle` is
  `projects/<project>/zones/<zone>/disks/<name>` (the driver's volIDZonalFmt, pkg/common/utils.go) and
  whose disk carries the driver's description JSON (kubernetes.io/created-for/pv/name, .../pvc/name,
  .../pvc/namespace, storage.gke.io/created-by; pkg/parameters/constants.go). Deleting the claim
  deletes the volume and its disk (reclaimPolicy Delete); with reclaimPolicy Retain the volume is
  Released and the disk stays (detached). A deleted cluster leaves its disks behind.

The resources live in `stores.compute_resources`, listed and deleted through the Compute API.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import json

from ..stores import compute_resources as resources
from ..stores import projects
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
    for kube in kube_clusters(sb):
        if not kube.cluster_id.startswith("gke_"):
            continue
        _, project, location, cluster = kube.cluster_id.split("_", 3)
        present = set()
        for gw in kube.list_objects(*GATEWAY):
            ns, name = gw["metadata"].get("namespace", "default"), gw["metadata"]["name"]
            key = f"{kube.cluster_id}/Gateway/{ns}/{name}"
            present.add(key)
            if key not in owners:
                uid = gw["metadata"].get("uid") or short_hash(key)
                lb = f"gkegw1-{short_hash(cluster)[:4]}-{ns}-{name}"[:50] + f"-{short_hash(uid, ns, name)[:12]}"
                klass = str((gw.get("spec") or {}).get("gatewayClassName") or "")
                scope = "global" if "global" in klass else f"regions/{_region(location)}"
                address = f"34.{int(short_hash(lb), 16) % 250}.{int(short_hash(uid), 16) % 250}.10"
                resources.put(sb, project, "addresses", scope, {
                    "name": lb, "address": address, "addressType": "EXTERNAL", "status": "IN_USE",
                    "networkTier": "PREMIUM"})
                resources.put(sb, project, "forwardingRules", scope, {
                    "name": lb, "IPProtocol": "TCP", "portRange": "443-443", "loadBalancingScheme": "EXTERNAL_MANAGED",
                    "IPAddress": address})
                number = projects.project_number(sb, project)
                annotations = gw["metadata"].setdefault("annotations", {})
                annotations["networking.gke.io/forwarding-rules"] = f"/projects/{number}/{scope}/forwardingRules/{lb}"
                annotations["networking.gke.io/addresses"] = f"/projects/{number}/{scope}/addresses/{lb}"
                gw["status"] = {**(gw.get("status") or {}), "addresses": [{"type": "IPAddress", "value": address}]}
                kube.put(gw)
                owners[key] = {"cluster": kube.cluster_id, "project": project, "release_at": None,
                               "items": [["addresses", scope, lb], ["forwardingRules", scope, lb]]}
                sb.store.mark()
        for pvc in kube.list_objects("", "persistentvolumeclaims"):
            meta = pvc["metadata"]
            ns = meta.get("namespace", "default")
            key = f"{kube.cluster_id}/PersistentVolume/{ns}/{meta['name']}"
            if key not in owners:
                disk = f"pvc-{meta.get('uid') or short_hash(key)}"
                size = str((((pvc.get("spec") or {}).get("resources") or {}).get("requests") or {}).get("storage", "10Gi"))
                gib = int(float(size.rstrip("Gi") or 10)) if size.endswith("Gi") else 10
                zone = location if location.count("-") == 2 else location + "-a"
                scope = f"zones/{zone}"
                description = json.dumps({"kubernetes.io/created-for/pv/name": disk,
                                          "kubernetes.io/created-for/pvc/name": meta["name"],
                                          "kubernetes.io/created-for/pvc/namespace": ns,
                                          "storage.gke.io/created-by": PD_CSI}, sort_keys=True, separators=(",", ":"))
                resources.put(sb, project, "disks", scope, {
                    "name": disk, "sizeGb": str(gib), "status": "READY", "type": f"{scope}/diskTypes/pd-balanced",
                    "description": description})
                reclaim = (meta.get("annotations") or {}).get("sandbox.gpuplat.io/reclaim-policy", "Delete")
                kube.put({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {
                    "name": disk, "annotations": {"pv.kubernetes.io/provisioned-by": PD_CSI}},
                    "spec": {"capacity": {"storage": f"{gib}Gi"}, "accessModes": (pvc.get("spec") or {}).get(
                        "accessModes") or ["ReadWriteOnce"], "persistentVolumeReclaimPolicy": reclaim,
                        "storageClassName": (pvc.get("spec") or {}).get("storageClassName") or "standard-rwo",
                        "claimRef": {"kind": "PersistentVolumeClaim", "namespace": ns, "name": meta["name"],
                                     "uid": meta.get("uid", "")},
                        "csi": {"driver": PD_CSI, "volumeHandle": f"projects/{project}/zones/{zone}/disks/{disk}",
                                "fsType": "ext4"}},
                    "status": {"phase": "Bound"}})
                pvc.setdefault("spec", {})["volumeName"] = disk
                pvc["status"] = {"phase": "Bound", "capacity": {"storage": f"{gib}Gi"}}
                kube.put(pvc)
                owners[key] = {"cluster": kube.cluster_id, "project": project, "release_at": None,
                               "items": [["disks", scope, disk]], "immediate": True, "volume": disk,
                               "reclaim": reclaim}
                sb.store.mark()
        # A claim gone: its volume goes with its disk (Delete), or stays Released with it (Retain).
        for pv in kube.list_objects("", "persistentvolumes"):
            ref = (pv.get("spec") or {}).get("claimRef") or {}
            key = f"{kube.cluster_id}/PersistentVolume/{ref.get('namespace', 'default')}/{ref.get('name', '')}"
            claim = kube.get_object("", "persistentvolumeclaims", ref.get("namespace"), ref.get("name", ""))
            if claim is not None or key not in owners:
                present.add(key)
                continue
            if owners[key].get("reclaim") == "Retain":
                present.add(key)
                if (pv.get("status") or {}).get("phase") != "Released":
                    pv["status"] = {"phase": "Released"}
                    kube.put(pv)
            else:
                kube.delete(kube.type_for("v1", "PersistentVolume"), None, pv["metadata"]["name"])
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
    clusters = sb.store.section("kube")
    for key, rec in list(owners.items()):
        if rec["cluster"] not in clusters:
            owners.pop(key)
            sb.store.mark()
