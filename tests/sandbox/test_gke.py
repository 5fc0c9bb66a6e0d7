"""The sandbox's GKE, through the official container_v1 REST client and the kubernetes client."""

from __future__ import annotations

import base64
import json
import socket
import ssl
import time
import urllib.error
import urllib.request

import pytest
from google.api_core import exceptions
from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import container_v1
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from sandbox.sims import gke_nodes
from sandbox.stores import gke
from tests.conftest import admin, kube_api

PROJECT = "gpuplat-test"
REGION = "us-central1"
PARENT = f"projects/{PROJECT}/locations/{REGION}"
CLUSTER = f"{PARENT}/clusters/c1"
Status = container_v1.Operation.Status


# ---- helpers -----------------------------------------------------------------------------------------
def gke_client(sandbox) -> container_v1.ClusterManagerClient:
    return container_v1.ClusterManagerClient(
        transport="rest", credentials=AnonymousCredentials(),
        client_options=ClientOptions(api_endpoint=sandbox.urls()["container"]))





def raw_get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def wait(c: container_v1.ClusterManagerClient, op: container_v1.Operation) -> container_v1.Operation:
    for _ in range(5):
        if op.status == Status.DONE:
            return op
        op = c.get_operation(name=f"{PARENT}/operations/{op.name}")
    raise AssertionError(f"operation {op.name} not done after 5 polls")


def gpu_pool(name="gpu", machine="g2-standard-4", accel="nvidia-l4", min_nodes=0, max_nodes=2, initial=0,
             **kw) -> container_v1.NodePool:
    return container_v1.NodePool(
        name=name, initial_node_count=initial,
        config=container_v1.NodeConfig(
            machine_type=machine,
            accelerators=[container_v1.AcceleratorConfig(
                accelerator_count=1, accelerator_type=accel,
                gpu_driver_installation_config=container_v1.GPUDriverInstallationConfig(
                    gpu_driver_version=container_v1.GPUDriverInstallationConfig.GPUDriverVersion.DEFAULT))],
            taints=[container_v1.NodeTaint(key="workload", value="gpu",
                                           effect=container_v1.NodeTaint.Effect.NO_SCHEDULE)],
            labels={"gpuplat.io/role": "gpu"}),
        autoscaling=container_v1.NodePoolAutoscaling(enabled=True, min_node_count=min_nodes,
                                                     max_node_count=max_nodes),
        **kw)


def system_pool(initial=1) -> container_v1.NodePool:
    return container_v1.NodePool(name="system", initial_node_count=initial,
                                 config=container_v1.NodeConfig(machine_type="e2-standard-4"))


def create_cluster(c, name="c1", pools=None, **kw) -> container_v1.Operation:
    return c.create_cluster(parent=PARENT, cluster=container_v1.Cluster(
        name=name, node_pools=pools if pools is not None else [system_pool()], **kw))


@pytest.fixture
def c(sandbox):
    return gke_client(sandbox)


@pytest.fixture
def running(sandbox, c):
    """A RUNNING cluster c1 with one e2-standard-4 system node."""
    wait(c, create_cluster(c))
    return c


# ---- clusters and operations -------------------------------------------------------------------------
def test_creating_a_cluster_returns_a_pending_operation_that_each_poll_advances_to_done(c):
    op = create_cluster(c)
    assert op.status == Status.PENDING
    assert op.operation_type == container_v1.Operation.Type.CREATE_CLUSTER
    assert op.target_link.endswith(CLUSTER)
    assert c.get_cluster(name=CLUSTER).status == container_v1.Cluster.Status.PROVISIONING
    op = c.get_operation(name=f"{PARENT}/operations/{op.name}")
    assert op.status == Status.RUNNING
    op = c.get_operation(name=f"{PARENT}/operations/{op.name}")
    assert op.status == Status.DONE
    assert not op.error.message
    assert op.end_time


def test_a_running_cluster_has_the_fields_gke_fills_in(running):
    cl = running.get_cluster(name=CLUSTER)
    assert cl.status == container_v1.Cluster.Status.RUNNING
    # Each cluster its own endpoint, its own CA (https://cloud.google.com/kubernetes-engine/docs/concepts/cluster-trust):
    # the API answers HTTPS there, verified against masterAuth.clusterCaCertificate.
    host, port = cl.endpoint.split(":")
    assert host == "127.0.0.1" and int(port) > 0
    ca = base64.b64decode(cl.master_auth.cluster_ca_certificate)
    assert ca.startswith(b"-----BEGIN CERTIFICATE-----")
    context = ssl.create_default_context(cadata=ca.decode())
    with socket.create_connection((host, int(port)), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname=host) as tls:
            assert tls.version().startswith("TLS")
    assert cl.current_master_version == gke.DEFAULT_VERSION
    assert cl.current_node_version == gke.DEFAULT_VERSION
    assert cl.self_link == f"https://container.googleapis.com/v1/{CLUSTER}"
    assert cl.locations == [f"{REGION}-a"]
    assert cl.create_time
    pool = cl.node_pools[0]
    assert pool.status == container_v1.NodePool.Status.RUNNING
    assert pool.config.image_type == "COS_CONTAINERD"
    assert pool.config.disk_type == "pd-balanced"
    assert pool.management.auto_upgrade and pool.management.auto_repair
    assert pool.version == gke.DEFAULT_VERSION
    assert pool.pod_ipv4_cidr_size == 24
    assert len(pool.instance_group_urls) == 1 and f"zones/{REGION}-a/" in pool.instance_group_urls[0]


def test_an_operation_is_done_five_simulated_seconds_after_it_started_without_polls(sandbox, c):
    op = create_cluster(c)
    admin(sandbox, "POST", "/sandbox/clock/advance", {"seconds": 6})
    assert c.get_cluster(name=CLUSTER).status == container_v1.Cluster.Status.RUNNING
    assert c.get_operation(name=f"{PARENT}/operations/{op.name}").status == Status.DONE


def test_creating_a_cluster_that_exists_is_a_conflict(running):
    with pytest.raises(exceptions.Conflict) as info:
        create_cluster(running)
    assert "Already exists" in info.value.message


def test_getting_a_missing_cluster_is_not_found(c):
    with pytest.raises(exceptions.NotFound):
        c.get_cluster(name=f"{PARENT}/clusters/nope")
    with pytest.raises(exceptions.NotFound):
        c.get_node_pool(name=f"{PARENT}/clusters/nope/nodePools/x")
    with pytest.raises(exceptions.NotFound):
        c.get_operation(name=f"{PARENT}/operations/operation-0-missing")


def test_a_cluster_name_gke_would_refuse_is_a_bad_request(c):
    with pytest.raises(exceptions.BadRequest):
        create_cluster(c, name="Bad_Name")
    with pytest.raises(exceptions.BadRequest, match="initial_node_count"):
        c.create_cluster(parent=PARENT, cluster=container_v1.Cluster(name="empty"))


def test_clusters_are_listed_per_location_and_across_locations(c):
    wait(c, create_cluster(c, name="a"))
    c.create_cluster(parent=f"projects/{PROJECT}/locations/europe-west4-a",
                     cluster=container_v1.Cluster(name="b", node_pools=[system_pool()]))
    assert [cl.name for cl in c.list_clusters(parent=PARENT).clusters] == ["a"]
    assert sorted(cl.name for cl in c.list_clusters(parent=f"projects/{PROJECT}/locations/-").clusters) == ["a", "b"]
    zonal = c.get_cluster(name=f"projects/{PROJECT}/locations/europe-west4-a/clusters/b")
    assert zonal.locations == ["europe-west4-a"]


def test_an_answer_is_trimmed_to_the_request_s_field_mask(sandbox, running):
    """Google's X-Goog-FieldMask system parameter (https://cloud.google.com/apis/docs/system-parameters):
    the answer holds the fields named and nothing else; a path runs through repeated fields."""
    wait(running, running.create_node_pool(parent=CLUSTER, node_pool=gpu_pool()))
    masked = running.get_cluster(name=CLUSTER, metadata=[("x-goog-fieldmask", "name,nodePools.name")])
    assert masked.name == "c1" and [p.name for p in masked.node_pools] == ["system", "gpu"]
    assert not masked.endpoint and not masked.self_link and not masked.node_pools[1].config.machine_type
    listed = running.list_clusters(parent=PARENT, metadata=[("x-goog-fieldmask", "clusters.name,clusters.status")])
    assert [(c.name, c.status) for c in listed.clusters] == [("c1", container_v1.Cluster.Status.RUNNING)]
    assert not listed.clusters[0].node_pools
    status, body = raw_get(f"{sandbox.urls()['container']}/v1/{CLUSTER}?fields=name,currentMasterVersion")
    assert status == 200 and set(body) == {"name", "currentMasterVersion"}


def test_a_field_mask_naming_a_field_the_message_lacks_is_a_bad_request(running):
    with pytest.raises(exceptions.BadRequest, match="no field 'nodepools'"):
        running.get_cluster(name=CLUSTER, metadata=[("x-goog-fieldmask", "name,nodepools.name")])


def test_gpuplat_s_cluster_mask_keeps_everything_its_cluster_state_reads(running):
    """gpuplat reads clusters through a field mask (resources/google.py CLUSTER_FIELDS): the state it makes
    of a cluster with a GPU pool (accelerators, taints, labels, autoscaling) is the same as read whole."""
    from resources.google import CLUSTER_FIELDS, FIELD_MASK_HEADER, _cluster_state

    wait(running, running.create_node_pool(parent=CLUSTER, node_pool=gpu_pool()))
    whole = running.get_cluster(name=CLUSTER)
    masked = running.get_cluster(name=CLUSTER, metadata=[(FIELD_MASK_HEADER, ",".join(CLUSTER_FIELDS))])
    assert whole.self_link and not masked.self_link  # the mask trims
    state = _cluster_state(masked)
    assert state == _cluster_state(whole)
    gpu = next(p for p in state.node_pools if p.name == "gpu")
    assert gpu.accelerator_type == "nvidia-l4" and gpu.taints and gpu.labels and gpu.max_nodes == 2
    assert state.endpoint and state.ca_certificate and state.master_version
    listed = running.list_clusters(parent=PARENT, metadata=[(FIELD_MASK_HEADER,
                                                             ",".join(f"clusters.{f}" for f in CLUSTER_FIELDS))])
    assert [_cluster_state(c) for c in listed.clusters] == [state]


def test_plain_json_gets_enum_names_and_the_rest_clients_get_integers(sandbox, running):
    base = sandbox.urls()["container"] + f"/v1/{CLUSTER}"
    _, named = raw_get(base)
    _, numbered = raw_get(base + "?$alt=json;enum-encoding=int")
    assert named["status"] == "RUNNING"
    assert numbered["status"] == 2
    assert named["nodePools"][0]["upgradeSettings"]["strategy"] == "SURGE"
    assert numbered["nodePools"][0]["upgradeSettings"]["strategy"] == 3


def test_zero_values_are_omitted_as_google_omits_them(sandbox, running):
    wait(running, running.create_node_pool(parent=CLUSTER, node_pool=gpu_pool(min_nodes=0, initial=0)))
    _, pool = raw_get(sandbox.urls()["container"] + f"/v1/{CLUSTER}/nodePools/gpu")
    assert "minNodeCount" not in pool["autoscaling"]
    assert pool["autoscaling"]["maxNodeCount"] == 2
    assert "initialNodeCount" not in pool
    assert pool["config"]["accelerators"][0]["acceleratorCount"] == "1"  # int64 as a string


def test_the_deprecated_zones_paths_answer_too(sandbox, running):
    status, body = raw_get(sandbox.urls()["container"] + f"/v1/projects/{PROJECT}/zones/{REGION}/clusters/c1")
    assert status == 200 and body["name"] == "c1"


def test_operations_are_listed_and_server_config_offers_versions(running):
    ops = running.list_operations(parent=PARENT).operations
    assert [o.operation_type for o in ops] == [container_v1.Operation.Type.CREATE_CLUSTER]
    cfg = running.get_server_config(name=PARENT)
    assert cfg.default_cluster_version == gke.DEFAULT_VERSION
    assert gke.DEFAULT_VERSION in cfg.valid_master_versions


def test_updating_a_cluster_reconciles_and_lands_at_done(running):
    op = running.update_cluster(name=CLUSTER, update=container_v1.ClusterUpdate(
        desired_workload_identity_config=container_v1.WorkloadIdentityConfig(workload_pool=f"{PROJECT}.svc.id.goog")))
    assert running.get_cluster(name=CLUSTER).status == container_v1.Cluster.Status.RECONCILING
    assert not running.get_cluster(name=CLUSTER).workload_identity_config.workload_pool
    wait(running, op)
    cl = running.get_cluster(name=CLUSTER)
    assert cl.status == container_v1.Cluster.Status.RUNNING
    assert cl.workload_identity_config.workload_pool == f"{PROJECT}.svc.id.goog"


def test_a_mutating_call_during_another_operation_is_failed_precondition(running):
    op = running.create_node_pool(parent=CLUSTER, node_pool=gpu_pool())
    with pytest.raises(exceptions.BadRequest) as info:
        running.create_node_pool(parent=CLUSTER, node_pool=gpu_pool(name="gpu2"))
    assert "Cluster is running incompatible operation" in info.value.message
    assert op.name in info.value.message
    assert info.value.response.json()["error"]["status"] == "FAILED_PRECONDITION"
    wait(running, op)
    wait(running, running.create_node_pool(parent=CLUSTER, node_pool=gpu_pool(name="gpu2")))


# ---- node pools ------------------------------------------------------------------------------------
def test_a_node_pool_is_created_listed_and_read(running):
    op = running.create_node_pool(parent=CLUSTER, node_pool=gpu_pool())
    assert op.operation_type == container_v1.Operation.Type.CREATE_NODE_POOL
    assert running.get_node_pool(name=f"{CLUSTER}/nodePools/gpu").status == container_v1.NodePool.Status.PROVISIONING
    wait(running, op)
    pool = running.get_node_pool(name=f"{CLUSTER}/nodePools/gpu")
    assert pool.status == container_v1.NodePool.Status.RUNNING
    assert pool.autoscaling.enabled and pool.autoscaling.max_node_count == 2
    assert pool.config.accelerators[0].accelerator_type == "nvidia-l4"
    assert [p.name for p in running.list_node_pools(parent=CLUSTER).node_pools] == ["system", "gpu"]
    with pytest.raises(exceptions.Conflict):
        running.create_node_pool(parent=CLUSTER, node_pool=gpu_pool())


def test_a_g2_pool_gets_its_l4_attached_and_a_t4_on_g2_is_refused(running):
    wait(running, running.create_node_pool(parent=CLUSTER, node_pool=container_v1.NodePool(
        name="g2", config=container_v1.NodeConfig(machine_type="g2-standard-8"))))
    pool = running.get_node_pool(name=f"{CLUSTER}/nodePools/g2")
    assert pool.config.accelerators[0].accelerator_type == "nvidia-l4"
    with pytest.raises(exceptions.BadRequest, match="not supported on machine type"):
        running.create_node_pool(parent=CLUSTER, node_pool=gpu_pool(name="t4", accel="nvidia-tesla-t4"))
    wait(running, running.create_node_pool(parent=CLUSTER, node_pool=gpu_pool(
        name="t4", machine="n1-standard-4", accel="nvidia-tesla-t4")))


def test_autoscaling_is_set_by_its_own_call_and_lands_at_done(running):
    wait(running, running.create_node_pool(parent=CLUSTER, node_pool=gpu_pool(max_nodes=2)))
    op = running.set_node_pool_autoscaling(request=container_v1.SetNodePoolAutoscalingRequest(
        name=f"{CLUSTER}/nodePools/gpu",
        autoscaling=container_v1.NodePoolAutoscaling(enabled=True, min_node_count=0, max_node_count=3)))
    assert running.get_node_pool(name=f"{CLUSTER}/nodePools/gpu").status == container_v1.NodePool.Status.RECONCILING
    wait(running, op)
    pool = running.get_node_pool(name=f"{CLUSTER}/nodePools/gpu")
    assert pool.autoscaling.max_node_count == 3
    assert pool.status == container_v1.NodePool.Status.RUNNING


def test_autoscaling_limits_gke_refuses_are_bad_requests(running):
    name = f"{CLUSTER}/nodePools/system"
    with pytest.raises(exceptions.BadRequest, match="min_node_count"):
        running.set_node_pool_autoscaling(request=container_v1.SetNodePoolAutoscalingRequest(
            name=name, autoscaling=container_v1.NodePoolAutoscaling(enabled=True, min_node_count=3,
                                                                    max_node_count=1)))
    with pytest.raises(exceptions.BadRequest, match="cannot be set together"):
        running.set_node_pool_autoscaling(request=container_v1.SetNodePoolAutoscalingRequest(
            name=name, autoscaling=container_v1.NodePoolAutoscaling(enabled=True, max_node_count=2,
                                                                    total_max_node_count=4)))


def test_updating_a_node_pool_needs_at_least_one_field(running):
    """The proto marks node_version and image_type REQUIRED; the server takes any one field and refuses an
    update of none: "At least one of ['node_version', 'image_type', ...] must be specified."
    (hashicorp/terraform-provider-google#19225)."""
    with pytest.raises(exceptions.BadRequest, match=r"At least one of \['node_version', 'image_type'"):
        running.update_node_pool(request=container_v1.UpdateNodePoolRequest(name=f"{CLUSTER}/nodePools/system"))
    wait(running, running.update_node_pool(request=container_v1.UpdateNodePoolRequest(
        name=f"{CLUSTER}/nodePools/system", image_type="COS_CONTAINERD")))


def test_an_update_cluster_request_carries_exactly_one_update(running):
    """ClusterUpdate: "Exactly one update can be applied to a cluster with each request, so at most one field
    can be provided." (container/v1 cluster_service.proto); none is "Must specify a field to update."
    (hashicorp/terraform-provider-google#23462)."""
    with pytest.raises(exceptions.BadRequest, match="Exactly one update can be applied"):
        running.update_cluster(name=CLUSTER, update=container_v1.ClusterUpdate(
            desired_release_channel=container_v1.ReleaseChannel(channel=container_v1.ReleaseChannel.Channel.STABLE),
            desired_workload_identity_config=container_v1.WorkloadIdentityConfig(workload_pool=f"{PROJECT}.svc.id.goog")))
    with pytest.raises(exceptions.BadRequest, match="Must specify a field to update."):
        running.update_cluster(name=CLUSTER, update=container_v1.ClusterUpdate())


def test_updating_a_node_pool_replaces_its_taints_and_labels_and_its_nodes_follow(sandbox, tmp_path, running):
    wait(running, running.create_node_pool(parent=CLUSTER, node_pool=gpu_pool(initial=1, max_nodes=2)))
    pool = running.get_node_pool(name=f"{CLUSTER}/nodePools/gpu")
    wait(running, running.update_node_pool(request=container_v1.UpdateNodePoolRequest(
        name=f"{CLUSTER}/nodePools/gpu", node_version=pool.version, image_type=pool.config.image_type,
        taints=container_v1.NodeTaints(taints=[]),
        labels=container_v1.NodeLabels(labels={"team": "ml"}))))
    pool = running.get_node_pool(name=f"{CLUSTER}/nodePools/gpu")
    assert list(pool.config.taints) == []
    assert dict(pool.config.labels) == {"team": "ml"}
    node = k8s.CoreV1Api(kube_api(sandbox, tmp_path, CLUSTER)).list_node(
        label_selector="cloud.google.com/gke-nodepool=gpu").items[0]
    assert node.metadata.labels["team"] == "ml"
    assert "gpuplat.io/role" not in node.metadata.labels
    assert [(t.key, t.effect) for t in node.spec.taints] == [("nvidia.com/gpu", "NoSchedule")]


def test_set_size_creates_nodes_that_the_kubernetes_client_sees(sandbox, tmp_path, running):
    wait(running, running.set_node_pool_size(request=container_v1.SetNodePoolSizeRequest(
        name=f"{CLUSTER}/nodePools/system", node_count=3)))
    nodes = k8s.CoreV1Api(kube_api(sandbox, tmp_path, CLUSTER)).list_node().items
    assert len(nodes) == 3
    assert running.get_cluster(name=CLUSTER).current_node_count == 3
    for node in nodes:
        assert node.metadata.name.startswith("gke-c1-system-")
        assert node.spec.provider_id == f"gce://{PROJECT}/{REGION}-a/{node.metadata.name}"
        assert node.metadata.labels["node.kubernetes.io/instance-type"] == "e2-standard-4"
        assert node.status.capacity["cpu"] == "4"
        assert node.status.node_info.kubelet_version == f"v{gke.DEFAULT_VERSION}"
        assert [c.status for c in node.status.conditions if c.type == "Ready"] == ["True"]
    wait(running, running.set_node_pool_size(request=container_v1.SetNodePoolSizeRequest(
        name=f"{CLUSTER}/nodePools/system", node_count=1)))
    assert len(k8s.CoreV1Api(kube_api(sandbox, tmp_path, CLUSTER)).list_node().items) == 1


def test_gpu_nodes_carry_the_labels_taints_and_capacity_gke_gives_them(sandbox, tmp_path, running):
    wait(running, running.create_node_pool(parent=CLUSTER, node_pool=gpu_pool(initial=1)))
    api = kube_api(sandbox, tmp_path, CLUSTER)
    node = k8s.CoreV1Api(api).list_node(label_selector="cloud.google.com/gke-accelerator=nvidia-l4").items[0]
    labels = node.metadata.labels
    assert labels["cloud.google.com/gke-nodepool"] == "gpu"
    assert labels["cloud.google.com/gke-gpu"] == "true"
    assert labels["topology.kubernetes.io/zone"] == f"{REGION}-a"
    assert labels["kubernetes.io/hostname"] == node.metadata.name
    assert labels["gpuplat.io/role"] == "gpu"
    assert sorted((t.key, t.value, t.effect) for t in node.spec.taints) == [
        ("nvidia.com/gpu", "present", "NoSchedule"), ("workload", "gpu", "NoSchedule")]
    assert node.status.capacity["nvidia.com/gpu"] == "1"
    assert node.status.allocatable["nvidia.com/gpu"] == "1"
    assert node.status.node_info.os_image == "Container-Optimized OS from Google"
    assert node.status.node_info.container_runtime_version.startswith("containerd://1.7.")
    # GKE's device plugin: one DaemonSet per node size and image, the size in the name (an L4 node takes
    # the small COS one), all labelled k8s-app=nvidia-gpu-device-plugin (rapidsai/deployment#572;
    # container-engine-accelerators cmd/nvidia_gpu/device-plugin.yaml for the label).
    plugins = {ds.metadata.name: ds for ds in k8s.AppsV1Api(api).list_namespaced_daemon_set(
        "kube-system", label_selector="k8s-app=nvidia-gpu-device-plugin").items}
    assert set(plugins) == {f"nvidia-gpu-device-plugin-{size}-{image}" for size in ("small", "medium", "large")
                            for image in ("cos", "ubuntu")}
    assert plugins["nvidia-gpu-device-plugin-small-cos"].status.desired_number_scheduled == 1
    assert sum(ds.status.desired_number_scheduled for ds in plugins.values()) == 1


def test_a_new_cluster_ships_gke_storage_and_snapshot_crds_but_no_snapshot_class(sandbox, tmp_path, running):
    api = kube_api(sandbox, tmp_path, CLUSTER)
    classes = {sc.metadata.name: sc for sc in k8s.StorageV1Api(api).list_storage_class().items}
    assert set(classes) == {"standard-rwo", "standard", "premium-rwo"}
    defaults = [n for n, sc in classes.items()
                if (sc.metadata.annotations or {}).get("storageclass.kubernetes.io/is-default-class") == "true"]
    assert defaults == ["standard-rwo"]
    assert classes["standard-rwo"].provisioner == "pd.csi.storage.gke.io"
    assert k8s.StorageV1Api(api).read_csi_driver("pd.csi.storage.gke.io").spec.attach_required
    crds = {crd.metadata.name for crd in k8s.ApiextensionsV1Api(api).list_custom_resource_definition().items}
    assert {"volumesnapshotclasses.snapshot.storage.k8s.io", "volumesnapshots.snapshot.storage.k8s.io",
            "volumesnapshotcontents.snapshot.storage.k8s.io"} <= crds
    snapshot_classes = k8s.CustomObjectsApi(api).list_cluster_custom_object(
        "snapshot.storage.k8s.io", "v1", "volumesnapshotclasses")
    assert snapshot_classes["items"] == []
    namespaces = {ns.metadata.name for ns in k8s.CoreV1Api(api).list_namespace().items}
    assert {"default", "kube-system", "kube-public", "kube-node-lease"} <= namespaces


# ---- stockouts, quota, drift, upgrades (admin API) -------------------------------------------------------
def test_a_min_zero_pool_cannot_stock_out_and_a_pool_with_nodes_is_left_in_error(sandbox, running):
    """A pool of 0 nodes asks Compute for no VM: creating it cannot meet a stockout. One that starts with a node
    can: the operation ends DONE with the error, `statusMessage`/`detail` and a GCE_STOCKOUT condition
    (kubeflow/pipelines#673 shows such an operation), and the pool stays, in ERROR, as GKE leaves it
    (hashicorp/terraform-provider-google#10121; cluster_service.proto NodePool.Status.ERROR)."""
    admin(sandbox, "POST", "/sandbox/gke/stockouts", {"zone": f"{REGION}-a", "acceleratorType": "nvidia-l4"})
    op = wait(running, running.create_node_pool(parent=CLUSTER, node_pool=gpu_pool()))
    assert not op.error.message
    assert running.get_node_pool(name=f"{CLUSTER}/nodePools/gpu").status == container_v1.NodePool.Status.RUNNING
    warm = gpu_pool(name="gpu-warm", initial=1)
    op = wait(running, running.create_node_pool(parent=CLUSTER, node_pool=warm))
    assert op.status == Status.DONE and op.error.code == 8
    assert "ZONE_RESOURCE_POOL_EXHAUSTED" in op.error.message and "GCE_STOCKOUT" in op.error.message
    assert op.detail == op.error.message
    assert op.nodepool_conditions[0].code == container_v1.StatusCondition.Code.GCE_STOCKOUT
    failed = running.get_node_pool(name=f"{CLUSTER}/nodePools/gpu-warm")
    assert failed.status == container_v1.NodePool.Status.ERROR and "GCE_STOCKOUT" in failed.status_message
    assert failed.conditions[0].code == container_v1.StatusCondition.Code.GCE_STOCKOUT


def test_a_pool_whose_gpus_exceed_the_regional_quota_is_refused_at_once_with_gke_s_quota_message(sandbox, running):
    """GKE checks quota when it accepts the create: 403 PERMISSION_DENIED "Insufficient regional quota to
    satisfy request: resource "CPUS": request requires '12.0' and is short '4.0'. ..." comes back from the
    call itself (GoogleCloudPlatform/cloud-ops-sandbox#44, googlecodelabs/feedback#950)."""
    admin(sandbox, "PUT", "/sandbox/quotas", {"project": PROJECT, "region": REGION, "metric": "NVIDIA_L4_GPUS",
                                              "limit": 1})
    with pytest.raises(exceptions.Forbidden) as info:
        running.create_node_pool(parent=CLUSTER, node_pool=gpu_pool(initial=2, max_nodes=3))
    assert 'Insufficient regional quota to satisfy request: resource "NVIDIA_L4_GPUS": request requires' in \
        info.value.message and info.value.response.json()["error"]["status"] == "PERMISSION_DENIED"
    assert [p.name for p in running.list_node_pools(parent=CLUSTER).node_pools] == ["system"]


def test_drift_injection_changes_a_pool_without_counting_a_client_call(sandbox, tmp_path, running):
    wait(running, running.create_node_pool(parent=CLUSTER, node_pool=gpu_pool(initial=1)))
    admin(sandbox, "POST", "/sandbox/calls/reset")
    admin(sandbox, "POST", "/sandbox/gke/drift/node-pool", {
        "cluster": CLUSTER, "nodePool": "gpu",
        "patch": {"autoscaling": {"minNodeCount": 1}, "config": {"labels": {"drifted": "yes"}}}})
    assert admin(sandbox, "GET", "/sandbox/calls")["_total"] == {"read": 0, "mutate": 0}
    pool = running.get_node_pool(name=f"{CLUSTER}/nodePools/gpu")
    assert pool.autoscaling.min_node_count == 1
    assert pool.config.labels["drifted"] == "yes" and pool.config.labels["gpuplat.io/role"] == "gpu"
    node = k8s.CoreV1Api(kube_api(sandbox, tmp_path, CLUSTER)).list_node(
        label_selector="cloud.google.com/gke-nodepool=gpu").items[0]
    assert node.metadata.labels["drifted"] == "yes"


def test_cluster_drift_injection_deep_merges_into_the_cluster(sandbox, running):
    admin(sandbox, "POST", "/sandbox/gke/drift/cluster",
          {"cluster": CLUSTER, "patch": {"resourceLabels": {"owner": "someone-else"}}})
    assert running.get_cluster(name=CLUSTER).resource_labels["owner"] == "someone-else"


def test_a_simulated_auto_upgrade_moves_master_pool_and_kubelet_versions(sandbox, tmp_path, running):
    admin(sandbox, "POST", "/sandbox/gke/upgrade", {"cluster": CLUSTER, "version": "1.34.1-gke.1100"})
    cl = running.get_cluster(name=CLUSTER)
    assert cl.current_master_version == "1.34.1-gke.1100"
    assert cl.node_pools[0].version == "1.34.1-gke.1100"
    assert cl.status == container_v1.Cluster.Status.RUNNING
    node = k8s.CoreV1Api(kube_api(sandbox, tmp_path, CLUSTER)).list_node().items[0]
    assert node.status.node_info.kubelet_version == "v1.34.1-gke.1100"
    running.set_node_pool_size(request=container_v1.SetNodePoolSizeRequest(
        name=f"{CLUSTER}/nodePools/system", node_count=1))  # an upgrade leaves no operation running


# ---- the functions the simulated autoscaler calls -----------------------------------------------------
def test_gpu_nodes_allowed_respects_pool_max_quota_and_stockouts(sandbox, running):
    wait(running, running.create_node_pool(parent=CLUSTER, node_pool=gpu_pool(max_nodes=2)))
    with sandbox.store.lock:
        assert gke_nodes.gpu_nodes_allowed(sandbox, CLUSTER, "gpu", 2)[0]
        ok, why = gke_nodes.gpu_nodes_allowed(sandbox, CLUSTER, "gpu", 3)
        assert not ok and why.startswith("max node group size reached")
        ok, why = gke_nodes.gpu_nodes_allowed(sandbox, CLUSTER, "gpu", -1)
        assert not ok and why.startswith("min node group size reached")
        assert not gke_nodes.gpu_nodes_allowed(sandbox, CLUSTER, "system", 1)[0]  # no autoscaling
    admin(sandbox, "PUT", "/sandbox/quotas", {"project": PROJECT, "metric": "GPUS_ALL_REGIONS", "limit": 1})
    with sandbox.store.lock:
        gke_nodes.resize_pool(sandbox, CLUSTER, "gpu", 1)
        ok, why = gke_nodes.gpu_nodes_allowed(sandbox, CLUSTER, "gpu", 1)
        assert not ok and '"GPUS_ALL_REGIONS"' in why
    admin(sandbox, "PUT", "/sandbox/quotas", {"project": PROJECT, "metric": "GPUS_ALL_REGIONS", "limit": 8})
    admin(sandbox, "POST", "/sandbox/gke/stockouts", {"zone": f"{REGION}-a", "acceleratorType": "nvidia-l4"})
    with sandbox.store.lock:
        ok, why = gke_nodes.gpu_nodes_allowed(sandbox, "c1", "gpu", 1)
        assert not ok and "ZONE_RESOURCE_POOL_EXHAUSTED" in why
        assert gke_nodes.gpu_nodes_allowed(sandbox, "gke_gpuplat-test_us-central1_c1", "gpu", -1)[0]


def test_node_pools_lists_only_running_pools(sandbox, running):
    op = running.create_node_pool(parent=CLUSTER, node_pool=gpu_pool())
    with sandbox.store.lock:
        assert [(cl, p["name"]) for cl, p in gke_nodes.node_pools(sandbox)] == [(CLUSTER, "system")]
    wait(running, op)
    with sandbox.store.lock:
        pools = dict((p["name"], (cl, p)) for cl, p in gke_nodes.node_pools(sandbox))
        assert pools["gpu"][0] == CLUSTER
        assert pools["gpu"][1]["autoscaling"]["maxNodeCount"] == 2
        assert gke.cluster_for_kube(sandbox, "gke_gpuplat-test_us-central1_c1") == CLUSTER


def test_scaling_down_removes_the_named_node_first(sandbox, running):
    wait(running, running.create_node_pool(parent=CLUSTER, node_pool=gpu_pool(max_nodes=3)))
    with sandbox.store.lock:
        names = gke_nodes.resize_pool(sandbox, CLUSTER, "gpu", 3)
        assert len(names) == 3 and gke_nodes.pool_size(sandbox, CLUSTER, "gpu") == 3
        left = gke_nodes.resize_pool(sandbox, CLUSTER, "gpu", 2, prefer_remove=[names[1]])
        assert names[1] not in left and len(left) == 2
        template = gke_nodes.pool_node_template(sandbox, CLUSTER, "gpu")
        assert template["status"]["allocatable"]["nvidia.com/gpu"] == "1"


def test_state_changes_are_persisted_to_the_state_file(sandbox, running):
    """Off the request path, within SAVE_DELAY_S (sandbox/core.py StateStore.save_soon)."""
    from sandbox.core import SAVE_DELAY_S

    deadline = time.monotonic() + 20 * SAVE_DELAY_S
    while time.monotonic() < deadline:
        state = json.loads((sandbox.state_dir / "state.json").read_text())
        if CLUSTER in state.get("gke", {}).get("clusters", {}):
            break
        time.sleep(SAVE_DELAY_S / 5)
    assert CLUSTER in state["gke"]["clusters"]
