"""What GKE validates and fills in when a cluster or node pool is created (defaults, names, versions, shapes)."""

from __future__ import annotations

import copy
import json
from typing import TYPE_CHECKING

from google.cloud import container_v1

from ..core import ApiError
from ..stores import iam
from ..stores.gke import ACCEL_FAMILIES, COMPUTE_LINK, DEFAULT_OAUTH_SCOPES, DEFAULT_VERSION, G2_GPUS, LINK, NAME_RE, canonical, cluster_key, deep_merge, etag, name_hash, region_of, resolve_version, split_cluster_key, validate_autoscaling

if TYPE_CHECKING:
    from ..core import SandboxContext as Sandbox


def valid_name(name: str, message: str, noun: str) -> str:
    if not name:
        raise ApiError(400, f"{message}.name must be specified.")
    if not NAME_RE.match(name):
        raise ApiError(400, f"Invalid {noun} name \"{name}\": must match regex [a-z]([-a-z0-9]*[a-z0-9])? and be "
                            f"at most 40 characters.")
    return name


def build_pool(sb: "Sandbox", cluster_key: str, cluster: dict, spec: dict) -> dict:
    pool = copy.deepcopy(spec)
    name = valid_name(pool.get("name", ""), "NodePool", "node pool")
    if int(pool.get("initialNodeCount", 0)) < 0:
        raise ApiError(400, "NodePool.initial_node_count must be >= 0.")
    cfg = pool.setdefault("config", {})
    cfg.setdefault("machineType", "e2-medium")
    cfg.setdefault("diskSizeGb", 100)
    cfg.setdefault("diskType", "pd-balanced")
    cfg.setdefault("imageType", "COS_CONTAINERD")
    cfg.setdefault("oauthScopes", list(DEFAULT_OAUTH_SCOPES))
    cfg.setdefault("serviceAccount", "default")
    account = cfg["serviceAccount"]
    if account != "default" and not (iam.account_exists(sb, account) and iam.propagated(sb, account)):
        # sassoftware/viya4-iac-gcp#148: `Error 400: Service account "..." does not exist., badRequest`; also
        # for an account created moments ago, not yet propagated to GKE (terraform-google-kubernetes-engine#1160)
        raise ApiError(400, f'Service account "{account}" does not exist.')
    cfg.setdefault("metadata", {}).setdefault("disable-legacy-endpoints", "true")
    cfg.setdefault("shieldedInstanceConfig", {"enableIntegrityMonitoring": True})
    if cluster.get("workloadIdentityConfig", {}).get("workloadPool"):
        cfg.setdefault("workloadMetadataConfig", {"mode": "GKE_METADATA"})
    machine = cfg["machineType"]
    family = machine.split("-")[0]
    if not cfg.get("accelerators") and machine in G2_GPUS:
        # GKE attaches a G2 machine's L4 GPUs itself.
        cfg["accelerators"] = [{"acceleratorCount": str(G2_GPUS[machine]), "acceleratorType": "nvidia-l4"}]
    for acc in cfg.get("accelerators", []):
        atype = acc.get("acceleratorType", "")
        families = ACCEL_FAMILIES.get(atype)
        if families and family not in families:
            raise ApiError(400, f"Accelerator type \"{atype}\" is not supported on machine type \"{machine}\": "
                                f"use a {'/'.join(f + '-*' for f in families)} machine type.")
        if machine in G2_GPUS and int(acc.get("acceleratorCount", 0)) != G2_GPUS[machine]:
            raise ApiError(400, f"Machine type \"{machine}\" comes with {G2_GPUS[machine]} x {atype}; "
                                f"accelerator_count {acc.get('acceleratorCount', 0)} does not match.")
    pool["locations"] = list(pool.get("locations") or cluster.get("locations") or [cluster["location"]])
    region = region_of(cluster["location"])
    for z in pool["locations"]:
        if region_of(z) != region:
            raise ApiError(400, f"Location \"{z}\" is not in the cluster's region {region}.")
    if "autoscaling" in pool:
        pool["autoscaling"] = validate_autoscaling(pool["autoscaling"])
    pool.setdefault("management", {"autoUpgrade": True, "autoRepair": True})
    pool.setdefault("maxPodsConstraint", {"maxPodsPerNode": "110"})
    pool.setdefault("podIpv4CidrSize", 24)
    pool.setdefault("upgradeSettings", {"maxSurge": 1, "strategy": "SURGE"})
    pool["networkConfig"] = {"podRange": f"gke-{cluster['name']}-pods-{name_hash(cluster_key, n=8)}",
                             "podIpv4CidrBlock": cluster.get("clusterIpv4Cidr", "10.64.0.0/14"),
                             **pool.get("networkConfig", {})}
    pool["version"] = resolve_version(pool.get("version"), "Node") if pool.get("version") else \
        cluster.get("currentNodeVersion", cluster.get("currentMasterVersion", DEFAULT_VERSION))
    project = split_cluster_key(cluster_key)[0]
    pool["selfLink"] = f"{LINK}/{cluster_key}/nodePools/{name}"
    pool["instanceGroupUrls"] = [
        f"{COMPUTE_LINK}/projects/{project}/zones/{z}/instanceGroupManagers/"
        f"gke-{cluster['name']}-{name}-{name_hash(cluster_key, name, z)}-grp" for z in pool["locations"]]
    pool["status"] = "PROVISIONING"
    for k in ("statusMessage", "conditions", "etag"):
        pool.pop(k, None)
    etag(pool)
    return canonical(container_v1.NodePool, pool)


def build_cluster(sb: "Sandbox", project: str, location: str, spec: dict) -> dict:
    cl = copy.deepcopy(spec)
    name = valid_name(cl.get("name", ""), "Cluster", "cluster")
    key = cluster_key(project, location, name)
    pools = cl.pop("nodePools", [])
    initial = int(cl.pop("initialNodeCount", 0))
    node_config = cl.pop("nodeConfig", None)
    if pools and (initial or node_config):
        raise ApiError(400, "Cluster.node_pools and Cluster.initial_node_count/node_config are mutually exclusive: "
                            "set only node_pools.")
    if not pools:
        if initial <= 0:
            raise ApiError(400, "Cluster.initial_node_count must be greater than zero.")
        pools = [{"name": "default-pool", "initialNodeCount": initial, "config": node_config or {}}]
    region = region_of(location)
    zonal = region != location
    cl["location"] = location
    cl["zone"] = location
    cl["locations"] = list(cl.get("locations") or [location if zonal else f"{region}-a"])
    master = resolve_version(cl.get("initialClusterVersion"), "Master")
    cl["initialClusterVersion"] = master
    cl["currentMasterVersion"] = master
    cl["currentNodeVersion"] = master
    cl.setdefault("network", "default")
    cl.setdefault("subnetwork", "default")
    cl.setdefault("clusterIpv4Cidr", "10.64.0.0/14")
    cl["servicesIpv4Cidr"] = "34.118.224.0/20"
    cl.setdefault("loggingService", "logging.googleapis.com/kubernetes")
    cl.setdefault("monitoringService", "monitoring.googleapis.com/kubernetes")
    cl.setdefault("nodeIpv4CidrSize", 24)
    cl.setdefault("releaseChannel", {"channel": "REGULAR"})
    cl.setdefault("shieldedNodes", {"enabled": True})
    cl.setdefault("databaseEncryption", {"state": "DECRYPTED"})
    cl["addonsConfig"] = deep_merge({"gcePersistentDiskCsiDriverConfig": {"enabled": True},
                                      "networkPolicyConfig": {"disabled": True},
                                      "kubernetesDashboard": {"disabled": True}}, cl.get("addonsConfig", {}))
    cl.setdefault("ipAllocationPolicy", {"useIpAliases": True, "clusterIpv4CidrBlock": cl["clusterIpv4Cidr"],
                                         "servicesIpv4CidrBlock": cl["servicesIpv4Cidr"], "stackType": "IPV4"})
    cl["networkConfig"] = {"network": f"projects/{project}/global/networks/{cl['network']}",
                           "subnetwork": f"projects/{project}/regions/{region}/subnetworks/{cl['subnetwork']}",
                           "defaultSnatStatus": {}, **cl.get("networkConfig", {})}
    # masterAuth and endpoint arrive when the control plane is up (sims.gke_control).
    cl.pop("masterAuth", None)
    if cl.get("resourceLabels"):
        cl["labelFingerprint"] = name_hash(json.dumps(cl["resourceLabels"], sort_keys=True), n=8)
    cl["selfLink"] = f"{LINK}/{key}"
    cl["id"] = name_hash(key, "id", n=32)
    cl["createTime"] = sb.clock.rfc3339()
    cl["status"] = "PROVISIONING"
    cl.pop("endpoint", None)
    cl = canonical(container_v1.Cluster, cl)
    seen = set()
    built = []
    for p in pools:
        if p.get("name") in seen:
            raise ApiError(400, f"Node pool \"{p.get('name')}\" appears twice in Cluster.node_pools.")
        seen.add(p.get("name"))
        built.append(build_pool(sb, key, cl, p))
    cl["nodePools"] = built
    etag(cl)
    return cl
