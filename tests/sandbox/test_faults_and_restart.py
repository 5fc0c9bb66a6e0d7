"""Injected faults, bad requests, concurrent clients and restarts, through the official clients."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request

import pytest
from google.api_core import exceptions
from google.api_core.retry import Retry, if_exception_type
from google.cloud import container_v1, secretmanager_v1, service_usage_v1
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from tests.conftest import admin, client_options as opts
from tests.sandbox.conftest import enable_all

PROJECT = "gpuplat-test"
PARENT = f"projects/{PROJECT}/locations/us-central1"
CLUSTER = f"{PARENT}/clusters/c1"
AUTOMATIC = secretmanager_v1.Replication(automatic=secretmanager_v1.Replication.Automatic())


def fault(urls: dict, api: str, method: str, kind: str, count: int = 1) -> None:
    admin(urls, "POST", "/sandbox/faults", {"api": api, "method": method, "kind": kind, "count": count})


def raw(url: str, method: str = "GET", body: bytes | None = None) -> tuple[int, dict]:
    req = urllib.request.Request(url, method=method, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def create_running_cluster(c: container_v1.ClusterManagerClient) -> None:
    pool = container_v1.NodePool(name="system", initial_node_count=1,
                                 config=container_v1.NodeConfig(machine_type="e2-standard-4"))
    op = c.create_cluster(parent=PARENT, cluster=container_v1.Cluster(name="c1", node_pools=[pool]))
    while op.status != container_v1.Operation.Status.DONE:
        op = c.get_operation(name=f"{PARENT}/operations/{op.name}")


def gpu_pool(name: str = "gpu") -> container_v1.NodePool:
    return container_v1.NodePool(
        name=name, initial_node_count=1, config=container_v1.NodeConfig(machine_type="g2-standard-4"),
        autoscaling=container_v1.NodePoolAutoscaling(enabled=True, min_node_count=0, max_node_count=2))


def finish(c, op) -> container_v1.Operation:
    for _ in range(3):
        if op.status == container_v1.Operation.Status.DONE:
            return op
        op = c.get_operation(name=f"{PARENT}/operations/{op.name}")
    return op


@pytest.fixture
def urls(sandbox):
    return sandbox.urls()


@pytest.fixture
def gke(urls):
    c = container_v1.ClusterManagerClient(**opts(urls, "container"))
    create_running_cluster(c)
    return c


# ---- injected faults --------------------------------------------------------------------------------
def test_an_injected_503_raises_service_unavailable_once(urls, gke):
    fault(urls, "container", "GetCluster", "503")
    with pytest.raises(exceptions.ServiceUnavailable):
        gke.get_cluster(name=CLUSTER, retry=None)  # GKE's default retry would hide a single 503
    assert gke.get_cluster(name=CLUSTER, retry=None).name == "c1"


def test_an_injected_429_raises_too_many_requests(urls, gke):
    fault(urls, "container", "ListNodePools", "429")
    with pytest.raises(exceptions.TooManyRequests):
        gke.list_node_pools(parent=CLUSTER)


def test_a_call_with_a_retry_survives_three_503s(urls, gke):
    fault(urls, "container", "GetCluster", "503", count=3)
    retry = Retry(predicate=if_exception_type(exceptions.ServiceUnavailable), initial=0.01, maximum=0.05,
                  multiplier=1.5, timeout=10)
    assert gke.get_cluster(name=CLUSTER, retry=retry).name == "c1"
    calls = admin(urls, "GET", "/sandbox/calls")["container"]["methods"]["GetCluster"]
    assert calls == 4


def test_faults_hit_other_apis_too(urls):
    sm = secretmanager_v1.SecretManagerServiceClient(**opts(urls, "secretmanager"))
    fault(urls, "secretmanager", "CreateSecret", "503")
    with pytest.raises(exceptions.ServiceUnavailable):
        sm.create_secret(parent=f"projects/{PROJECT}", secret_id="s", secret=secretmanager_v1.Secret(
            replication=AUTOMATIC))
    su = service_usage_v1.ServiceUsageClient(**opts(urls, "serviceusage"))
    fault(urls, "serviceusage", "*", "429")
    with pytest.raises(exceptions.TooManyRequests):
        su.get_service(request={"name": f"projects/{PROJECT}/services/container.googleapis.com"})


def test_a_quota_fault_on_node_pool_creation_ends_the_operation_with_gke_s_quota_error(urls, gke):
    fault(urls, "container", "CreateNodePool", "quota")
    op = finish(gke, gke.create_node_pool(parent=CLUSTER, node_pool=gpu_pool()))
    assert op.status == container_v1.Operation.Status.DONE
    assert op.error.code == 8
    assert op.error.message.startswith('Insufficient regional quota to satisfy request: resource "NVIDIA_L4_GPUS"')
    # The failed pool stays in ERROR, as GKE leaves it; deleted, it can be created again (the fault is used up).
    assert gke.get_node_pool(name=f"{CLUSTER}/nodePools/gpu").status == container_v1.NodePool.Status.ERROR
    finish(gke, gke.delete_node_pool(name=f"{CLUSTER}/nodePools/gpu"))
    op = finish(gke, gke.create_node_pool(parent=CLUSTER, node_pool=gpu_pool()))
    assert not op.error.message


def test_a_stockout_fault_on_node_pool_creation_ends_the_operation_with_resource_exhausted(urls, gke):
    fault(urls, "container", "CreateNodePool", "stockout")
    op = finish(gke, gke.create_node_pool(parent=CLUSTER, node_pool=gpu_pool()))
    assert op.error.code == 8
    assert "ZONE_RESOURCE_POOL_EXHAUSTED" in op.error.message
    assert "us-central1-a" in op.error.message
    failed = gke.get_node_pool(name=f"{CLUSTER}/nodePools/gpu")
    assert failed.status == container_v1.NodePool.Status.ERROR and failed.conditions[0].code == \
        container_v1.StatusCondition.Code.GCE_STOCKOUT


def test_a_stockout_fault_on_an_update_leaves_the_pool_as_it_was(urls, gke):
    fault(urls, "container", "SetNodePoolAutoscaling", "stockout")
    op = finish(gke, gke.set_node_pool_autoscaling(request=container_v1.SetNodePoolAutoscalingRequest(
        name=f"{CLUSTER}/nodePools/system",
        autoscaling=container_v1.NodePoolAutoscaling(enabled=True, min_node_count=1, max_node_count=3))))
    assert op.error.code == 8
    pool = gke.get_node_pool(name=f"{CLUSTER}/nodePools/system")
    assert not pool.autoscaling.enabled
    assert pool.status == container_v1.NodePool.Status.RUNNING


def test_a_quota_fault_on_a_read_is_answered_as_an_error(urls, gke):
    fault(urls, "container", "GetCluster", "quota")
    with pytest.raises(exceptions.Forbidden):
        gke.get_cluster(name=CLUSTER)


def test_a_quota_fault_on_a_secret_write_fails_it_before_anything_is_written(urls):
    sm = secretmanager_v1.SecretManagerServiceClient(**opts(urls, "secretmanager"))
    fault(urls, "secretmanager", "CreateSecret", "quota")
    with pytest.raises(exceptions.Forbidden, match="Quota exceeded"):
        sm.create_secret(parent=f"projects/{PROJECT}", secret_id="s", secret=secretmanager_v1.Secret(
            replication=AUTOMATIC))
    assert list(sm.list_secrets(parent=f"projects/{PROJECT}")) == []


def test_a_failed_operation_poll_does_not_advance_the_operation(urls):
    c = container_v1.ClusterManagerClient(**opts(urls, "container"))
    op = c.create_cluster(parent=PARENT, cluster=container_v1.Cluster(name="c1", node_pools=[gpu_pool("p")]))
    fault(urls, "container", "GetOperation", "stockout")
    with pytest.raises(exceptions.ServiceUnavailable):
        c.get_operation(name=f"{PARENT}/operations/{op.name}", retry=None)
    assert c.get_operation(name=f"{PARENT}/operations/{op.name}").status == container_v1.Operation.Status.RUNNING


# ---- bad requests -----------------------------------------------------------------------------------
def test_malformed_json_is_a_bad_request_with_a_message_and_the_server_keeps_answering(urls, gke):
    status, body = raw(urls["container"] + f"/v1/{PARENT}/clusters", "POST", b"{not json")
    assert status == 400
    assert body["error"]["status"] == "INVALID_ARGUMENT"
    assert body["error"]["message"].startswith("Invalid JSON payload received.")
    status, body = raw(urls["serviceusage"] + f"/v1/projects/{PROJECT}/services:batchEnable", "POST", b"[")
    assert status == 400 and body["error"]["message"].startswith("Invalid JSON payload received.")
    assert gke.get_cluster(name=CLUSTER).name == "c1"


def test_an_unknown_field_is_a_bad_request_as_google_rejects_it(urls):
    status, body = raw(urls["container"] + f"/v1/{PARENT}/clusters", "POST",
                       json.dumps({"cluster": {"name": "x", "noSuchField": 1}}).encode())
    assert status == 400 and "noSuchField" in body["error"]["message"]


@pytest.mark.parametrize("api", ["container", "serviceusage", "secretmanager", "compute", "billing"])
def test_an_unknown_path_is_not_found(urls, api):
    status, body = raw(urls[api] + "/v1/no/such/thing/here")
    assert status == 404
    assert body["error"]["code"] == 404


# ---- concurrency ------------------------------------------------------------------------------------
def test_two_clients_working_at_once_see_a_consistent_state(urls):
    clients = [secretmanager_v1.SecretManagerServiceClient(**opts(urls, "secretmanager")) for _ in range(2)]
    shared = clients[0].create_secret(parent=f"projects/{PROJECT}", secret_id="shared",
                                      secret=secretmanager_v1.Secret(replication=AUTOMATIC))
    errors: list[BaseException] = []

    def work(i: int, sm) -> None:
        try:
            for j in range(10):
                own = sm.create_secret(parent=f"projects/{PROJECT}", secret_id=f"t{i}-{j}",
                                       secret=secretmanager_v1.Secret(replication=AUTOMATIC))
                sm.add_secret_version(parent=own.name, payload=secretmanager_v1.SecretPayload(data=b"x"))
                sm.add_secret_version(parent=shared.name,
                                      payload=secretmanager_v1.SecretPayload(data=f"{i}-{j}".encode()))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i, sm)) for i, sm in enumerate(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    sm = clients[0]
    assert len(list(sm.list_secrets(parent=f"projects/{PROJECT}"))) == 21
    versions = [v.name.rsplit("/", 1)[-1] for v in sm.list_secret_versions(parent=shared.name)]
    assert sorted(map(int, versions)) == list(range(1, 21))
    payloads = {sm.access_secret_version(name=f"{shared.name}/versions/{n}").payload.data for n in versions}
    assert len(payloads) == 20


# ---- restart ----------------------------------------------------------------------------------------
def test_state_survives_a_restart_of_the_sandbox_process(sandbox_process, tmp_path):
    urls = sandbox_process.start()
    enable_all(urls)
    c = container_v1.ClusterManagerClient(**opts(urls, "container"))
    create_running_cluster(c)
    sm = secretmanager_v1.SecretManagerServiceClient(**opts(urls, "secretmanager"))
    secret = sm.create_secret(parent=f"projects/{PROJECT}", secret_id="kept",
                              secret=secretmanager_v1.Secret(replication=AUTOMATIC))
    sm.add_secret_version(parent=secret.name, payload=secretmanager_v1.SecretPayload(data=b"still here"))
    su = service_usage_v1.ServiceUsageClient(**opts(urls, "serviceusage"))
    su.batch_enable_services(request={"parent": f"projects/{PROJECT}",
                                      "service_ids": ["container.googleapis.com"]}).result(timeout=10)
    path = tmp_path / "kubeconfig"  # written before the restart: each cluster keeps its endpoint and CA
    path.write_text(admin(urls, "GET", f"/sandbox/kubeconfig?cluster={CLUSTER}"))
    endpoint = c.get_cluster(name=CLUSTER).endpoint
    sandbox_process.stop()

    urls = sandbox_process.start()
    c = container_v1.ClusterManagerClient(**opts(urls, "container"))
    cl = c.get_cluster(name=CLUSTER)
    assert cl.status == container_v1.Cluster.Status.RUNNING
    sm = secretmanager_v1.SecretManagerServiceClient(**opts(urls, "secretmanager"))
    assert sm.access_secret_version(name=f"{secret.name}/versions/latest").payload.data == b"still here"
    su = service_usage_v1.ServiceUsageClient(**opts(urls, "serviceusage"))
    svc = su.get_service(request={"name": f"projects/{PROJECT}/services/container.googleapis.com"})
    assert svc.state == service_usage_v1.State.ENABLED
    assert cl.endpoint == endpoint
    api = k8s_config.new_client_from_config(config_file=str(path), persist_config=False)
    assert len(k8s.CoreV1Api(api).list_node().items) == 1


def test_a_cluster_whose_port_was_taken_while_stopped_moves_and_its_endpoint_says_where(tmp_path):
    """A stopped sandbox's cluster API port can be taken by another program; on restart the cluster
    answers on a new port and `Cluster.endpoint` (what gpuplat and `gcloud get-credentials` read) names it."""
    import socket

    from sandbox.app import Sandbox
    from tests.conftest import EPHEMERAL

    sb = Sandbox(tmp_path / "state", ports=EPHEMERAL)
    sb.start()
    enable_all(sb.urls())
    c = container_v1.ClusterManagerClient(**opts(sb.urls(), "container"))
    create_running_cluster(c)
    before = c.get_cluster(name=CLUSTER).endpoint
    sb.stop()
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", int(before.rsplit(":", 1)[1])))
        squatter.listen()
        sb = Sandbox(tmp_path / "state", ports=EPHEMERAL)
        sb.start()
        try:
            c = container_v1.ClusterManagerClient(**opts(sb.urls(), "container"))
            after = c.get_cluster(name=CLUSTER).endpoint
            assert after != before and after.startswith("127.0.0.1:")
            path = tmp_path / "kubeconfig"
            path.write_text(admin(sb.urls(), "GET", f"/sandbox/kubeconfig?cluster={CLUSTER}"))
            api = k8s_config.new_client_from_config(config_file=str(path), persist_config=False)
            assert len(k8s.CoreV1Api(api).list_node().items) == 1
            assert api.configuration.host.endswith(after.rsplit(":", 1)[1])
        finally:
            sb.stop()
