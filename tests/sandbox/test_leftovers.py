"""What a GKE cluster leaves in the project, and the drain a PodDisruptionBudget holds: the sandbox's
Gateway controller, persistent disk CSI driver and disruption controller, through the official clients."""

from __future__ import annotations

from google.cloud import compute_v1, container_v1
from kubernetes import client

from tests.conftest import admin, client_options, compute_leftovers
from tests.sandbox.test_autoscaler import LOCATION, NAME, PROJECT, gke_client, make_cluster, wait  # noqa: F401

GATEWAY_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": "gateways.gateway.networking.k8s.io"},
    "spec": {"group": "gateway.networking.k8s.io", "scope": "Namespaced",
             "names": {"kind": "Gateway", "plural": "gateways", "singular": "gateway", "listKind": "GatewayList"},
             "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {
                 "type": "object", "x-kubernetes-preserve-unknown-fields": True}}}]}}


def listed(sandbox) -> dict[str, list[str]]:
    return compute_leftovers(sandbox, PROJECT)


def gateway(api: client.ApiClient, name: str = "public") -> None:
    client.CustomObjectsApi(api).create_namespaced_custom_object("gateway.networking.k8s.io", "v1", "default", "gateways", {
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway", "metadata": {"name": name},
        "spec": {"gatewayClassName": "gke-l7-regional-external-managed", "listeners": [
            {"name": "http", "protocol": "HTTP", "port": 80}]}})


def test_a_gateway_s_load_balancer_outlives_it_for_a_while_and_outlives_a_deleted_cluster_for_good(sandbox,
                                                                                                    make_cluster):
    """GKE's Gateway controller provisions a forwarding rule and an address per Gateway and releases them
    after the Gateway is deleted, not at once (the seed's pause.sh waits up to 5 minutes for them: its "LB
    footgun"); a cluster deleted under its Gateways leaves them billed (pause.sh deletes the Gateways first and
    ends with `gcloud compute forwarding-rules list` / `addresses list` for that reason)."""
    api = make_cluster()
    client.ApiextensionsV1Api(api).create_custom_resource_definition(GATEWAY_CRD)
    gateway(api, "public")
    gateway(api, "internal")
    made = listed(sandbox)
    assert len(made["forwardingRules"]) == 2 and made["forwardingRules"] == made["addresses"]
    client.CustomObjectsApi(api).delete_namespaced_custom_object("gateway.networking.k8s.io", "v1", "default",
                                                                 "gateways", "public")
    assert len(listed(sandbox)["forwardingRules"]) == 2  # still there right after
    admin(sandbox, "POST", "/sandbox/clock/advance", {"seconds": 121})
    assert len(listed(sandbox)["forwardingRules"]) == 1
    gke = gke_client(sandbox)
    wait(gke, gke.delete_cluster(name=NAME))
    admin(sandbox, "POST", "/sandbox/clock/advance", {"seconds": 600})
    assert len(listed(sandbox)["forwardingRules"]) == 1 and len(listed(sandbox)["addresses"]) == 1  # orphaned


def test_a_pvc_gets_a_disk_that_its_deletion_removes_and_a_cluster_deletion_orphans(sandbox, make_cluster):
    """The PD CSI driver names a dynamically provisioned disk `pvc-<uid>` and deletes it with the claim
    (reclaimPolicy Delete); the seed's pause audit deletes the `name~pvc` disks a destroyed cluster left."""
    api = make_cluster()
    core = client.CoreV1Api(api)
    for name in ("data", "cache"):
        core.create_namespaced_persistent_volume_claim("default", {
            "metadata": {"name": name}, "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "standard-rwo",
                                                 "resources": {"requests": {"storage": "30Gi"}}}})
    disks = listed(sandbox)["disks"]
    assert len(disks) == 2 and all(d.startswith("pvc-") for d in disks)
    core.delete_namespaced_persistent_volume_claim("cache", "default")
    assert len(listed(sandbox)["disks"]) == 1
    gke = gke_client(sandbox)
    wait(gke, gke.delete_cluster(name=NAME))
    [orphan] = listed(sandbox)["disks"]
    disk = compute_v1.DisksClient(**client_options(sandbox, "compute")).get(project=PROJECT, zone=LOCATION, disk=orphan)
    assert disk.size_gb == 30


def test_a_pdb_allowing_no_disruption_holds_the_node_pool_deletion_until_it_goes(sandbox, make_cluster):
    """A node pool's deletion drains its nodes; a PodDisruptionBudget with no disruption allowed (CloudNativePG's
    minAvailable: 1 on one instance) holds the drain (container v1 NodePool.NodeDrainConfig
    respect_pdb_during_node_pool_deletion / pdb_timeout_duration; pause.sh step 4/6: "hangs tofu destroy for
    the full drain timeout"). The disruption controller computes disruptionsAllowed (Kubernetes docs,
    "Specifying a Disruption Budget")."""
    api = make_cluster()
    core = client.CoreV1Api(api)
    node = next(n.metadata.name for n in core.list_node().items
                if n.metadata.labels.get("cloud.google.com/gke-nodepool") == "cpu")
    made = admin(sandbox, "POST", "/sandbox/blockers", {"cluster": NAME, "node": node, "kind": "pdb-zero"})
    pdb_name = next(o["name"] for o in made["objects"] if o["kind"] == "PodDisruptionBudget")
    policy = client.PolicyV1Api(api)
    assert policy.read_namespaced_pod_disruption_budget(pdb_name, "default").status.disruptions_allowed == 0
    gke = gke_client(sandbox)
    op = gke.delete_node_pool(name=f"{NAME}/nodePools/cpu")
    op_name = f"projects/{PROJECT}/locations/{LOCATION}/operations/{op.name}"
    for _ in range(5):
        assert gke.get_operation(name=op_name).status == container_v1.Operation.Status.RUNNING
    admin(sandbox, "POST", "/sandbox/clock/advance", {"seconds": 600})
    assert gke.get_operation(name=op_name).status == container_v1.Operation.Status.RUNNING
    policy.delete_namespaced_pod_disruption_budget(pdb_name, "default")
    wait(gke, op)
    assert [p.name for p in gke.get_cluster(name=NAME).node_pools] == ["gpu-l4"]
