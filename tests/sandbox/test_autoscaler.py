"""The simulated scheduler and GKE cluster autoscaler, through the official clients: a GKE cluster made
with `ClusterManagerClient(transport="rest")`, pods, nodes and events read with the kubernetes client,
workloads, blockers, quotas, stockouts and the clock moved through the admin API."""

from __future__ import annotations

import pytest
from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import container_v1
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.sandbox.test_controllers import admin, admin_error, advance, assert_quiet, events_for, kube_api

PROJECT = "gpuplat-test"
LOCATION = "us-central1-a"
CLUSTER = "ai-dev"
NAME = f"projects/{PROJECT}/locations/{LOCATION}/clusters/{CLUSTER}"
GPU_POOL = "gpu-l4"
POOL_LABEL = "cloud.google.com/gke-nodepool"


def gke_client(sandbox) -> container_v1.ClusterManagerClient:
    return container_v1.ClusterManagerClient(
        transport="rest", credentials=AnonymousCredentials(),
        client_options=ClientOptions(api_endpoint=sandbox.urls()["container"]))


def wait(gke: container_v1.ClusterManagerClient, op: container_v1.Operation) -> container_v1.Operation:
    name = f"projects/{PROJECT}/locations/{LOCATION}/operations/{op.name}"
    for _ in range(20):
        op = gke.get_operation(name=name)
        if op.status == container_v1.Operation.Status.DONE:
            assert not op.error.message, op.error.message
            return op
    raise AssertionError(f"operation {op.name} never finished")


def gpu_pool(min_nodes: int = 0, max_nodes: int = 1, initial: int = 0, autoscaling: bool = True,
             name: str = GPU_POOL) -> container_v1.NodePool:
    return container_v1.NodePool(
        name=name, initial_node_count=initial,
        config=container_v1.NodeConfig(
            machine_type="g2-standard-8",
            accelerators=[container_v1.AcceleratorConfig(
                accelerator_count=1, accelerator_type="nvidia-l4",
                gpu_driver_installation_config=container_v1.GPUDriverInstallationConfig(
                    gpu_driver_version=container_v1.GPUDriverInstallationConfig.GPUDriverVersion.DEFAULT))]),
        autoscaling=container_v1.NodePoolAutoscaling(enabled=autoscaling, min_node_count=min_nodes,
                                                     max_node_count=max_nodes))


@pytest.fixture
def make_cluster(sandbox, tmp_path):
    """A GKE cluster with one CPU node and a GPU pool, and a kubernetes client for it."""
    clients = []

    def make(pool: container_v1.NodePool | None = None) -> client.ApiClient:
        gke = gke_client(sandbox)
        cluster = container_v1.Cluster(name=CLUSTER, node_pools=[
            container_v1.NodePool(name="cpu", initial_node_count=1,
                                  config=container_v1.NodeConfig(machine_type="e2-standard-4")),
            pool or gpu_pool()])
        wait(gke, gke.create_cluster(parent=f"projects/{PROJECT}/locations/{LOCATION}", cluster=cluster))
        api = kube_api(sandbox, tmp_path, NAME)
        clients.append(api)
        return api

    yield make
    for api in clients:
        api.close()


def gpu_nodes(core: client.CoreV1Api) -> list[client.V1Node]:
    return core.list_node(label_selector=f"{POOL_LABEL}={GPU_POOL}").items


def add_workload(sandbox, name: str, **extra) -> dict:
    return admin(sandbox, "POST", "/sandbox/workloads/gpu", {"cluster": NAME, "name": name, "gpus": 1, **extra})


def pod(core: client.CoreV1Api, name: str) -> client.V1Pod:
    return core.read_namespaced_pod(name, "default")


def autoscaler_state(sandbox) -> dict:
    from urllib.parse import quote

    return admin(sandbox, "GET", f"/sandbox/kube/{quote(NAME, safe='')}/autoscaler")


def reasons(core: client.CoreV1Api, pod_name: str) -> list[str]:
    return [e.reason for e in events_for(core, "default", pod_name)]


# ---- scheduling and scale-up ---------------------------------------------------------------------------------
def test_a_gpu_pod_scales_the_pool_up_and_runs_on_the_new_node(sandbox, make_cluster):
    core = client.CoreV1Api(make_cluster())
    assert gpu_nodes(core) == []
    out = add_workload(sandbox, "llm")
    nodes = gpu_nodes(core)
    assert len(nodes) == 1 and nodes[0].status.allocatable["nvidia.com/gpu"] == "1"
    running = pod(core, out["pod"])
    assert running.status.phase == "Running" and running.spec.node_name == nodes[0].metadata.name
    assert running.metadata.owner_references[0].kind == "ReplicaSet"
    assert running.spec.containers[0].resources.limits["nvidia.com/gpu"] == "1"
    assert {"FailedScheduling", "TriggeredScaleUp"} <= set(reasons(core, out["pod"]))


def test_a_pod_that_fits_is_bound_without_a_scale_up(sandbox, make_cluster):
    core = client.CoreV1Api(make_cluster())
    core.create_namespaced_pod("default", client.V1Pod(
        metadata=client.V1ObjectMeta(name="web"),
        spec=client.V1PodSpec(containers=[client.V1Container(name="web", image="nginx")])))
    web = pod(core, "web")
    assert web.status.phase == "Running"
    assert core.read_node(web.spec.node_name).metadata.labels[POOL_LABEL] == "cpu"  # GPU nodes are tainted
    assert gpu_nodes(core) == []


def test_max_node_group_size_keeps_the_second_pod_pending_with_one_event(sandbox, make_cluster):
    core = client.CoreV1Api(make_cluster())
    add_workload(sandbox, "first")
    second = add_workload(sandbox, "second")["pod"]
    for _ in range(3):  # many controller passes, still one event per reason
        core.list_pod_for_all_namespaces()
    assert len(gpu_nodes(core)) == 1
    p = pod(core, second)
    assert p.status.phase == "Pending" and p.spec.node_name is None
    scheduled = next(c for c in p.status.conditions if c.type == "PodScheduled")
    assert (scheduled.status, scheduled.reason) == ("False", "Unschedulable")
    assert "Insufficient nvidia.com/gpu" in scheduled.message
    events = [e for e in events_for(core, "default", second) if e.reason == "NotTriggerScaleUp"]
    assert len(events) == 1 and "max node group size reached" in events[0].message
    assert events[0].source.component == "cluster-autoscaler"
    assert reasons(core, second).count("FailedScheduling") == 1


def pool_conditions(sandbox) -> list:
    return list(gke_client(sandbox).get_node_pool(
        name=f"projects/{PROJECT}/locations/{LOCATION}/clusters/{CLUSTER}/nodePools/{GPU_POOL}").conditions)


def test_gpu_quota_refuses_the_scale_up(sandbox, make_cluster):
    """GKE's autoscaler: `Warning FailedScaleUp ... Node scale up in zones us-central1-a associated with this
    pod failed: GCE quota exceeded. Pod is at risk of not being scheduled.` (k8s.io/gke-autoscaling events
    template; the failure strings of GKE's cluster-autoscaler visibility docs, scale.up.error.quota.exceeded)."""
    core = client.CoreV1Api(make_cluster())
    admin(sandbox, "PUT", "/sandbox/quotas", {"project": PROJECT, "region": "us-central1",
                                              "metric": "NVIDIA_L4_GPUS", "limit": 0})
    name = add_workload(sandbox, "llm")["pod"]
    assert gpu_nodes(core) == [] and pod(core, name).status.phase == "Pending"
    failed = [e for e in events_for(core, "default", name) if e.reason == "FailedScaleUp"]
    assert len(failed) == 1 and failed[0].type == "Warning"
    assert failed[0].message == (f"Node scale up in zones {LOCATION} associated with this pod failed: GCE quota "
                                 f"exceeded. Pod is at risk of not being scheduled.")
    [condition] = pool_conditions(sandbox)
    assert condition.code == container_v1.StatusCondition.Code.GCE_QUOTA_EXCEEDED and "NVIDIA_L4_GPUS" in condition.message


def test_a_stockout_refuses_the_scale_up_until_it_clears(sandbox, make_cluster):
    """A min-0 pool creates no VM, so the stockout meets the first scale-up: `FailedScaleUp ... failed: GCE out
    of resources.` on the pod (user logs of GKE; GKE visibility messageId scale.up.error.out.of.resources) and a
    GCE_STOCKOUT StatusCondition on the pool (container/v1 cluster_service.proto StatusCondition.Code)."""
    core = client.CoreV1Api(make_cluster())
    admin(sandbox, "POST", "/sandbox/gke/stockouts", {"zone": LOCATION, "acceleratorType": "nvidia-l4"})
    name = add_workload(sandbox, "llm")["pod"]
    core.list_pod_for_all_namespaces()
    failed = [e for e in events_for(core, "default", name) if e.reason == "FailedScaleUp"]
    assert len(failed) == 1 and "failed: GCE out of resources. Pod is at risk of not being scheduled." in failed[0].message
    assert gpu_nodes(core) == []
    [condition] = pool_conditions(sandbox)
    assert condition.code == container_v1.StatusCondition.Code.GCE_STOCKOUT
    assert "ZONE_RESOURCE_POOL_EXHAUSTED" in condition.message
    admin(sandbox, "DELETE", "/sandbox/gke/stockouts")
    core.list_pod_for_all_namespaces()  # the autoscaler retries on its next pass
    assert pod(core, name).status.phase == "Running" and len(gpu_nodes(core)) == 1
    assert pool_conditions(sandbox) == []


def test_gpuplat_reads_only_the_failed_scale_ups_the_api_server_selects(sandbox, make_cluster, tmp_path):
    """gpuplat asks the API server for FailedScaleUp events on pods only (`fieldSelector=reason=FailedScaleUp,
    involvedObject.kind=Pod`: the event registry's selectable fields, kubernetes pkg/registry/core/event
    strategy.go), not for every event of a busy cluster (here the scheduler's FailedScheduling beside it)."""
    from resources.kube import Kube

    core = client.CoreV1Api(make_cluster())
    admin(sandbox, "PUT", "/sandbox/quotas", {"project": PROJECT, "region": "us-central1",
                                              "metric": "NVIDIA_L4_GPUS", "limit": 0})
    name = add_workload(sandbox, "llm")["pod"]
    every = core.list_event_for_all_namespaces().items
    assert {e.reason for e in every} - {"FailedScaleUp"}, [e.reason for e in every]
    kube = Kube(str(tmp_path / f"kubeconfig-{NAME.replace('/', '_')}"))
    selected = kube.list("v1", "Event", field_selector="reason=FailedScaleUp,involvedObject.kind=Pod")
    assert [(e["reason"], e["involvedObject"]["name"]) for e in selected] == [("FailedScaleUp", name)]
    [failure] = kube.failed_scale_ups()
    assert (failure.pod, failure.cause) == (("default", name), "quota")


def test_a_pod_no_pool_can_take_gets_not_trigger_scale_up(sandbox, make_cluster):
    core = client.CoreV1Api(make_cluster())
    name = add_workload(sandbox, "pinned", nodeSelector={"cloud.google.com/gke-accelerator": "nvidia-tesla-t4"})["pod"]
    events = [e for e in events_for(core, "default", name) if e.reason == "NotTriggerScaleUp"]
    assert len(events) == 1 and "didn't match Pod's node affinity/selector" in events[0].message
    assert gpu_nodes(core) == []


def test_a_pool_without_autoscaling_is_never_scaled(sandbox, make_cluster):
    core = client.CoreV1Api(make_cluster(gpu_pool(autoscaling=False)))
    name = add_workload(sandbox, "llm")["pod"]
    events = [e for e in events_for(core, "default", name) if e.reason == "NotTriggerScaleUp"]
    assert len(events) == 1 and "autoscaling disabled" in events[0].message
    assert gpu_nodes(core) == []


# ---- scale-down ---------------------------------------------------------------------------------------------
def idle_gpu_node(sandbox, core: client.CoreV1Api) -> str:
    """A GPU node that served a workload which then went away: idle from now on."""
    add_workload(sandbox, "llm")
    node = gpu_nodes(core)[0].metadata.name
    admin(sandbox, "DELETE", "/sandbox/workloads/gpu", {"cluster": NAME, "name": "llm"})
    core.list_node()  # the autoscaler notes the node idle
    return node


def test_an_idle_gpu_node_is_removed_after_the_scale_down_window(sandbox, make_cluster):
    core = client.CoreV1Api(make_cluster())
    node = idle_gpu_node(sandbox, core)
    assert node in autoscaler_state(sandbox)["idleSince"]
    advance(sandbox, 300)
    assert [n.metadata.name for n in gpu_nodes(core)] == [node]
    advance(sandbox, 301)
    assert gpu_nodes(core) == []
    assert core.list_node(label_selector=f"{POOL_LABEL}=cpu").items  # CPU pools are not scaled here
    assert autoscaler_state(sandbox)["idleSince"] == {}


def test_the_scale_down_window_is_a_per_cluster_setting(sandbox, make_cluster):
    from urllib.parse import quote

    core = client.CoreV1Api(make_cluster())
    out = admin(sandbox, "PUT", f"/sandbox/kube/{quote(NAME, safe='')}/settings", {"scaleDownWindowSeconds": 60})
    assert out["scaleDownWindowSeconds"] == 60
    idle_gpu_node(sandbox, core)
    advance(sandbox, 61)
    assert gpu_nodes(core) == []
    code, _ = admin_error(sandbox, "PUT", f"/sandbox/kube/{quote(NAME, safe='')}/settings",
                          {"scaleDownWindowSeconds": -1})
    assert code == 400


def test_a_busy_gpu_node_stays(sandbox, make_cluster):
    core = client.CoreV1Api(make_cluster())
    add_workload(sandbox, "llm")
    advance(sandbox, 3600)
    assert len(gpu_nodes(core)) == 1
    assert autoscaler_state(sandbox)["idleSince"] == {}


def test_the_pool_minimum_keeps_an_idle_node(sandbox, make_cluster):
    core = client.CoreV1Api(make_cluster(gpu_pool(min_nodes=1, max_nodes=2, initial=1)))
    node = gpu_nodes(core)[0].metadata.name
    core.list_node()
    advance(sandbox, 700)
    assert [n.metadata.name for n in gpu_nodes(core)] == [node]
    assert autoscaler_state(sandbox)["blocked"][node]["reason"] == "MinSizeReached"


@pytest.mark.parametrize("kind,reason", [
    ("bare-pod", "NotReplicated"),
    ("kube-system-no-pdb", "UnmovableKubeSystemPod"),
    ("local-storage", "LocalStorageRequested"),
    ("safe-to-evict-false", "NotSafeToEvictAnnotation"),
    ("pdb-zero", "NotEnoughPdb"),
    ("unmovable", "NoPlaceToMovePods"),
    ("node-scale-down-disabled", "ScaleDownDisabledAnnotation"),
])
def test_each_blocker_keeps_the_idle_node(sandbox, make_cluster, kind, reason):
    core = client.CoreV1Api(make_cluster())
    node = idle_gpu_node(sandbox, core)
    out = admin(sandbox, "POST", "/sandbox/blockers", {"cluster": NAME, "node": node, "kind": kind})
    assert out["objects"]
    if kind != "node-scale-down-disabled":
        blocker = core.read_namespaced_pod(out["pod"], out["namespace"])
        assert blocker.spec.node_name == node and blocker.status.phase == "Running"
    advance(sandbox, 700)
    assert [n.metadata.name for n in gpu_nodes(core)] == [node]
    blocked = autoscaler_state(sandbox)["blocked"][node]
    assert blocked["reason"] == reason
    if kind != "node-scale-down-disabled":
        assert blocked["pod"] == f"{out['namespace']}/{out['pod']}"
    assert_quiet(sandbox)  # a kept node is judged again each pass, but nothing is rewritten
    # Taking the blocker away lets the node go on the next pass.
    admin(sandbox, "DELETE", "/sandbox/blockers", {"cluster": NAME, "node": node})
    core.list_node()
    assert gpu_nodes(core) == []


def test_blocker_objects_look_like_the_real_thing(sandbox, make_cluster):
    core = client.CoreV1Api(make_cluster())
    node = idle_gpu_node(sandbox, core)
    local = admin(sandbox, "POST", "/sandbox/blockers", {"cluster": NAME, "node": node, "kind": "local-storage"})
    p = core.read_namespaced_pod(local["pod"], "default")
    assert p.spec.volumes[0].empty_dir is not None and p.metadata.owner_references[0].kind == "ReplicaSet"
    pdb = admin(sandbox, "POST", "/sandbox/blockers", {"cluster": NAME, "node": node, "kind": "pdb-zero"})
    budget = client.PolicyV1Api(core.api_client).read_namespaced_pod_disruption_budget(
        pdb["objects"][-1]["name"], "default")
    assert budget.status.disruptions_allowed == 0
    ks = admin(sandbox, "POST", "/sandbox/blockers", {"cluster": NAME, "node": node, "kind": "kube-system-no-pdb"})
    assert ks["namespace"] == "kube-system"
    nd = admin(sandbox, "POST", "/sandbox/blockers", {"cluster": NAME, "node": node,
                                                       "kind": "node-scale-down-disabled"})
    assert nd["node"] == node
    annotations = core.read_node(node).metadata.annotations
    assert annotations["cluster-autoscaler.kubernetes.io/scale-down-disabled"] == "true"
    code, _ = admin_error(sandbox, "POST", "/sandbox/blockers", {"cluster": NAME, "node": node, "kind": "gremlin"})
    assert code == 400


@pytest.mark.parametrize("annotations,removed", [
    ({"cluster-autoscaler.kubernetes.io/safe-to-evict": "true"}, True),
    ({}, False),
], ids=["safe-to-evict true lifts it", "without the annotation it blocks"])
def test_safe_to_evict_true_lifts_a_bare_pod(sandbox, make_cluster, annotations, removed):
    core = client.CoreV1Api(make_cluster())
    node = idle_gpu_node(sandbox, core)
    made = admin(sandbox, "POST", "/sandbox/blockers", {"cluster": NAME, "node": node, "kind": "bare-pod",
                                                        "annotations": annotations})
    pod = core.read_namespaced_pod(made["pod"], made["namespace"])  # placed on that node, annotated as asked
    assert pod.spec.node_name == node and (pod.metadata.annotations or {}).items() >= annotations.items()
    advance(sandbox, 700)
    assert (gpu_nodes(core) == []) is removed


def test_local_volumes_listed_as_safe_do_not_block(sandbox, make_cluster):
    core = client.CoreV1Api(make_cluster())
    node = idle_gpu_node(sandbox, core)
    made = admin(sandbox, "POST", "/sandbox/blockers", {
        "cluster": NAME, "node": node, "kind": "local-storage",
        "annotations": {"cluster-autoscaler.kubernetes.io/safe-to-evict-local-volumes": "scratch"}})
    pod = core.read_namespaced_pod(made["pod"], made["namespace"])
    assert pod.spec.node_name == node and any(v.empty_dir is not None for v in pod.spec.volumes or [])
    advance(sandbox, 700)
    assert gpu_nodes(core) == []


def test_daemonset_and_expendable_pods_never_block(sandbox, make_cluster):
    core = client.CoreV1Api(make_cluster())
    apps = client.AppsV1Api(core.api_client)
    node = idle_gpu_node(sandbox, core)
    ds = apps.create_namespaced_daemon_set("kube-system", client.V1DaemonSet(
        metadata=client.V1ObjectMeta(name="node-agent"),
        spec=client.V1DaemonSetSpec(selector=client.V1LabelSelector(match_labels={"app": "node-agent"}),
                                    template=client.V1PodTemplateSpec(
                                        metadata=client.V1ObjectMeta(labels={"app": "node-agent"}),
                                        spec=client.V1PodSpec(containers=[client.V1Container(name="a",
                                                                                             image="busybox")])))))
    tolerate_all = [client.V1Toleration(operator="Exists")]
    core.create_namespaced_pod("kube-system", client.V1Pod(
        metadata=client.V1ObjectMeta(name="node-agent-x", labels={"app": "node-agent"}, owner_references=[
            client.V1OwnerReference(api_version="apps/v1", kind="DaemonSet", name="node-agent", uid=ds.metadata.uid,
                                    controller=True)]),
        spec=client.V1PodSpec(node_name=node, tolerations=tolerate_all,
                              volumes=[client.V1Volume(name="logs", host_path=client.V1HostPathVolumeSource(
                                  path="/var/log"))],
                              containers=[client.V1Container(name="a", image="busybox")])))
    core.create_namespaced_pod("default", client.V1Pod(
        metadata=client.V1ObjectMeta(name="expendable"),
        spec=client.V1PodSpec(node_name=node, priority=-100, tolerations=tolerate_all,
                              containers=[client.V1Container(name="a", image="busybox")])))
    assert core.read_namespaced_pod("expendable", "default").status.phase == "Running"
    advance(sandbox, 700)
    assert gpu_nodes(core) == []
    with pytest.raises(ApiException) as info:  # drained with the node
        core.read_namespaced_pod("expendable", "default")
    assert info.value.status == 404


def test_an_idle_autoscaler_writes_nothing(sandbox, make_cluster):
    core = client.CoreV1Api(make_cluster())
    add_workload(sandbox, "llm")
    add_workload(sandbox, "waiting")  # stays Pending: max reached
    core.list_pod_for_all_namespaces()
    assert_quiet(sandbox)
