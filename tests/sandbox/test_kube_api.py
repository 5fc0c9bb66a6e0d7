"""The sandbox's Kubernetes API through the official client and kubectl: discovery, CRUD,
selectors, errors, concurrency. Patches and server-side apply: test_kube_patches.py; CRDs and
custom resources: test_kube_crds.py (both reuse the `kube` fixture defined here)."""

from __future__ import annotations

import base64
import http.client
import json
import shutil
import ssl
import subprocess
import threading
import urllib.error
import urllib.request
from types import SimpleNamespace

import kubernetes
import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

CLUSTER = "test-cluster"


@pytest.fixture
def kube(sandbox, tmp_path):
    """A sandbox cluster with the usual namespaces, and an official client from its kubeconfig."""
    with sandbox.store.lock:
        store = sandbox.kube(CLUSTER)
        for ns in ("default", "kube-system", "kube-public"):
            store.put({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        sandbox.store.save_if_dirty()
    admin = sandbox.urls()["admin"]
    with urllib.request.urlopen(f"{admin}/sandbox/kubeconfig?cluster={CLUSTER}") as resp:
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_bytes(resp.read())
    api = kubernetes.config.new_client_from_config(config_file=str(kubeconfig), persist_config=False)
    yield SimpleNamespace(api=api, kubeconfig=kubeconfig, admin=admin, sandbox=sandbox, store=store,
                          server=sandbox.kube_server_url(CLUSTER), tmp_path=tmp_path)
    api.close()


def new_client(kube):
    return kubernetes.config.new_client_from_config(config_file=str(kube.kubeconfig), persist_config=False)


def raw(kube, method: str, path: str, body: bytes | None = None, content_type: str = "application/json",
        token: str | None = None, accept: str = "application/json"):
    """A request with urllib, for what the official client would never send; returns (code, body).

    It trusts the cluster's CA and sends the kubeconfig's token (or `token`, "" for none)."""
    cfg = yaml.safe_load(kube.kubeconfig.read_text())
    ca = base64.b64decode(cfg["clusters"][0]["cluster"]["certificate-authority-data"]).decode()
    token = cfg["users"][0]["user"]["token"] if token is None else token
    headers = {"Content-Type": content_type, "Accept": accept,
               **({"Authorization": f"Bearer {token}"} if token else {})}
    req = urllib.request.Request(kube.server + path, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10, context=ssl.create_default_context(cadata=ca)) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def admin_post(kube, path: str, body: dict) -> dict:
    req = urllib.request.Request(kube.admin + path, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def status_of(exc: ApiException) -> dict:
    return json.loads(exc.body)


def node(name: str, labels: dict | None = None) -> client.V1Node:
    return client.V1Node(metadata=client.V1ObjectMeta(name=name, labels=labels or {}))


def pod(name: str, namespace: str = "default", labels: dict | None = None, node_name: str | None = None):
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=name, namespace=namespace, labels=labels or {}),
        spec=client.V1PodSpec(node_name=node_name, containers=[client.V1Container(name="main", image="busybox")]))


# ---- meta endpoints and discovery ------------------------------------------------------------------------


def test_version_and_health_endpoints_answer_like_kube_apiserver(kube):
    info = client.VersionApi(kube.api).get_code()
    assert info.git_version.startswith("v1.33.")
    assert (info.major, info.minor) == ("1", "33")
    assert info.platform and info.go_version and info.build_date
    for path in ("/readyz", "/livez", "/healthz"):
        assert raw(kube, "GET", path) == (200, b"ok")


def test_discovery_lists_core_resources_with_subresources(kube):
    assert client.CoreApi(kube.api).get_api_versions().versions == ["v1"]
    resources = {r.name: r for r in client.CoreV1Api(kube.api).get_api_resources().resources}
    assert {"pods", "pods/status", "pods/log", "nodes", "namespaces", "secrets", "configmaps", "events",
            "services"} <= resources.keys()
    pods = resources["pods"]
    assert (pods.kind, pods.namespaced, pods.singular_name) == ("Pod", True, "pod")
    assert "po" in pods.short_names and {"list", "watch", "patch", "create"} <= set(pods.verbs)
    assert resources["nodes"].namespaced is False
    assert resources["pods/log"].verbs == ["get"]


def test_discovery_lists_groups_with_their_preferred_versions(kube):
    groups = {g.name: g for g in client.ApisApi(kube.api).get_api_versions().groups}
    assert {"apps", "storage.k8s.io", "policy", "apiextensions.k8s.io"} <= groups.keys()
    assert groups["apps"].preferred_version.group_version == "apps/v1"
    apps = client.AppsApi(kube.api).get_api_group()
    assert apps.name == "apps" and apps.versions[0].version == "v1"
    kinds = {r.name: r.kind for r in client.AppsV1Api(kube.api).get_api_resources().resources}
    assert kinds["daemonsets"] == "DaemonSet" and kinds["deployments/status"] == "Deployment"


def test_discovery_of_an_unknown_group_is_not_found(kube):
    assert raw(kube, "GET", "/apis/snapshot.storage.k8s.io")[0] == 404
    assert raw(kube, "GET", "/apis/apps/v2")[0] == 404


@pytest.mark.parametrize("token", ["", "not-a-token", "ya29.expired-or-forged"])
def test_a_request_without_a_valid_token_is_unauthorized(kube, token):
    """kube-apiserver answers 401 with a Status (reason Unauthorized) to a missing or invalid bearer token
    (https://kubernetes.io/docs/reference/access-authn-authz/authentication/)."""
    code, body = raw(kube, "GET", "/api/v1/nodes", token=token)
    assert code == 401
    assert json.loads(body)["reason"] == "Unauthorized"


def test_each_cluster_answers_on_its_own_https_endpoint(kube):
    """A cluster's API is at the root of its own endpoint (no path prefix), over HTTPS only."""
    assert kube.server.startswith("https://127.0.0.1:") and kube.server.count("/") == 2
    other = kube.sandbox.kube_server_url("another-cluster")
    assert other != kube.server
    plain = kube.server.replace("https://", "http://")
    with pytest.raises((urllib.error.URLError, ConnectionError, http.client.HTTPException)):
        urllib.request.urlopen(plain + "/version", timeout=5)


# ---- CRUD ------------------------------------------------------------------------------------------------


def test_namespaces_are_created_active_and_deleted_with_their_contents(kube):
    core = client.CoreV1Api(kube.api)
    ns = core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="team-a")))
    assert ns.status.phase == "Active" and ns.metadata.uid and ns.metadata.resource_version
    core.create_namespaced_config_map("team-a", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="c")))
    assert "team-a" in [n.metadata.name for n in core.list_namespace().items]
    core.delete_namespace("team-a")
    with pytest.raises(ApiException) as exc:
        core.read_namespace("team-a")
    assert exc.value.status == 404
    assert core.list_namespaced_config_map("team-a").items == []


def test_a_protected_namespace_cannot_be_deleted(kube):
    with pytest.raises(ApiException) as exc:
        client.CoreV1Api(kube.api).delete_namespace("kube-system")
    assert exc.value.status == 403


def test_creating_in_a_namespace_that_does_not_exist_is_not_found(kube):
    with pytest.raises(ApiException) as exc:
        client.CoreV1Api(kube.api).create_namespaced_secret(
            "nope", client.V1Secret(metadata=client.V1ObjectMeta(name="s")))
    assert exc.value.status == 404
    assert status_of(exc.value)["message"] == 'namespaces "nope" not found'


def test_nodes_are_filtered_by_equality_and_set_based_label_selectors(kube):
    core = client.CoreV1Api(kube.api)
    core.create_node(node("cpu-1", {"pool": "cpu"}))
    core.create_node(node("gpu-1", {"pool": "gpu", "accelerator": "nvidia-l4"}))
    core.create_node(node("gpu-2", {"pool": "gpu", "accelerator": "nvidia-tesla-t4"}))
    core.create_node(node("bare"))

    def names(selector: str) -> list[str]:
        return [n.metadata.name for n in core.list_node(label_selector=selector).items]

    assert names("pool=gpu") == ["gpu-1", "gpu-2"]
    assert names("pool==gpu,accelerator=nvidia-l4") == ["gpu-1"]
    assert names("pool!=gpu") == ["bare", "cpu-1"]
    assert names("accelerator in (nvidia-l4, nvidia-tesla-t4)") == ["gpu-1", "gpu-2"]
    assert names("pool notin (gpu)") == ["bare", "cpu-1"]
    assert names("accelerator") == ["gpu-1", "gpu-2"]
    assert names("!accelerator") == ["bare", "cpu-1"]
    assert names("pool in (cpu,gpu),!accelerator") == ["cpu-1"]
    with pytest.raises(ApiException) as exc:
        core.list_node(label_selector="pool in gpu")
    assert exc.value.status == 400


def test_pods_are_filtered_by_field_selectors_and_listed_across_namespaces(kube):
    core = client.CoreV1Api(kube.api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="serving")))
    core.create_namespaced_pod("default", pod("a", node_name="gpu-1", labels={"app": "vllm"}))
    core.create_namespaced_pod("default", pod("b", node_name="cpu-1"))
    core.create_namespaced_pod("serving", pod("c", namespace="serving", node_name="gpu-1", labels={"app": "vllm"}))
    core.create_namespaced_pod("serving", pod("pending", namespace="serving"))
    core.patch_namespaced_pod_status("a", "default", {"status": {"phase": "Running"}})

    def names(**kw) -> list[str]:
        return [p.metadata.name for p in core.list_pod_for_all_namespaces(**kw).items]

    assert names() == ["a", "b", "c", "pending"]
    assert names(field_selector="spec.nodeName=gpu-1") == ["a", "c"]
    assert names(field_selector="spec.nodeName=") == ["pending"]
    assert names(field_selector="spec.nodeName==gpu-1,metadata.namespace!=default") == ["c"]
    assert names(field_selector="status.phase=Running") == ["a"]
    assert names(field_selector="status.phase!=Running") == ["b", "c", "pending"]
    assert names(field_selector="metadata.name=b") == ["b"]
    assert names(field_selector="spec.nodeName=gpu-1", label_selector="app in (vllm)") == ["a", "c"]
    assert [p.metadata.name for p in core.list_namespaced_pod("serving").items] == ["c", "pending"]
    listed = core.list_namespaced_pod("serving")
    assert int(listed.metadata.resource_version) > 0
    with pytest.raises(ApiException) as exc:
        core.list_pod_for_all_namespaces(field_selector="spec.unknown=x")
    assert exc.value.status == 400 and "field label not supported" in status_of(exc.value)["message"]


def test_secrets_configmaps_events_and_services_round_trip(kube):
    core = client.CoreV1Api(kube.api)
    core.create_namespaced_secret("default", client.V1Secret(
        metadata=client.V1ObjectMeta(name="creds"), type="Opaque", string_data={"token": "t0p"}))
    secret = core.read_namespaced_secret("creds", "default")
    assert secret.data == {"token": "dDBw"} and secret.string_data is None  # base64, as the API server stores it
    cm = core.create_namespaced_config_map("default", client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="settings", labels={"tier": "platform"}), data={"a": "1"}))
    assert cm.metadata.generation == 1
    cm.data["b"] = "2"
    replaced = core.replace_namespaced_config_map("settings", "default", cm)
    assert replaced.data == {"a": "1", "b": "2"}
    assert int(replaced.metadata.resource_version) > int(cm.metadata.resource_version)
    core.create_namespaced_event("default", client.CoreV1Event(
        metadata=client.V1ObjectMeta(name="settings.1"), reason="Updated", message="changed", type="Normal",
        involved_object=client.V1ObjectReference(kind="ConfigMap", name="settings", namespace="default")))
    events = core.list_namespaced_event("default", field_selector="involvedObject.name=settings")
    assert [e.reason for e in events.items] == ["Updated"]
    core.create_namespaced_service("default", client.V1Service(
        metadata=client.V1ObjectMeta(name="gateway"),
        spec=client.V1ServiceSpec(type="LoadBalancer", ports=[client.V1ServicePort(name="http", port=80)])))
    svc = core.read_namespaced_service("gateway", "default")
    assert svc.spec.type == "LoadBalancer" and svc.spec.ports[0].port == 80
    deleted = core.delete_namespaced_secret("creds", "default")
    assert deleted.status == "Success"
    assert [s.metadata.name for s in core.list_namespaced_secret("default").items] == []
    with pytest.raises(ApiException) as exc:
        core.delete_namespaced_secret("creds", "default")
    assert exc.value.status == 404


def test_storage_classes_daemonsets_and_pod_disruption_budgets_round_trip(kube):
    storage = client.StorageV1Api(kube.api)
    storage.create_storage_class(client.V1StorageClass(
        metadata=client.V1ObjectMeta(name="standard-rwo",
                                     annotations={"storageclass.kubernetes.io/is-default-class": "true"}),
        provisioner="pd.csi.storage.gke.io", volume_binding_mode="WaitForFirstConsumer"))
    classes = storage.list_storage_class().items
    assert [(c.metadata.name, c.provisioner) for c in classes] == [("standard-rwo", "pd.csi.storage.gke.io")]

    apps = client.AppsV1Api(kube.api)
    labels = {"app": "dcgm-exporter"}
    ds = client.V1DaemonSet(
        metadata=client.V1ObjectMeta(name="dcgm-exporter", namespace="kube-system"),
        spec=client.V1DaemonSetSpec(
            selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels),
                spec=client.V1PodSpec(containers=[client.V1Container(name="exporter", image="dcgm:1")]))))
    apps.create_namespaced_daemon_set("kube-system", ds)
    got = apps.read_namespaced_daemon_set("dcgm-exporter", "kube-system")
    assert got.spec.template.spec.containers[0].image == "dcgm:1"
    assert [d.metadata.name for d in apps.list_daemon_set_for_all_namespaces().items] == ["dcgm-exporter"]

    policy = client.PolicyV1Api(kube.api)
    policy.create_namespaced_pod_disruption_budget("kube-system", client.V1PodDisruptionBudget(
        metadata=client.V1ObjectMeta(name="dcgm"),
        spec=client.V1PodDisruptionBudgetSpec(max_unavailable=1, selector=client.V1LabelSelector(
            match_labels=labels))))
    pdbs = policy.list_pod_disruption_budget_for_all_namespaces().items
    assert [(p.metadata.namespace, p.spec.max_unavailable) for p in pdbs] == [("kube-system", 1)]
    policy.delete_namespaced_pod_disruption_budget("dcgm", "kube-system")
    assert policy.list_namespaced_pod_disruption_budget("kube-system").items == []


def test_generation_bumps_only_when_the_spec_changes(kube):
    apps = client.AppsV1Api(kube.api)
    labels = {"app": "x"}
    template = client.V1PodTemplateSpec(metadata=client.V1ObjectMeta(labels=labels), spec=client.V1PodSpec(
        containers=[client.V1Container(name="c", image="a")]))
    ds = apps.create_namespaced_daemon_set("default", client.V1DaemonSet(
        metadata=client.V1ObjectMeta(name="x"),
        spec=client.V1DaemonSetSpec(selector=client.V1LabelSelector(match_labels=labels), template=template)))
    assert ds.metadata.generation == 1
    labelled = apps.patch_namespaced_daemon_set("x", "default", {"metadata": {"labels": {"team": "gpu"}}})
    assert labelled.metadata.generation == 1
    changed = apps.patch_namespaced_daemon_set("x", "default", {"spec": {"minReadySeconds": 5}})
    assert changed.metadata.generation == 2


def test_status_subresource_is_the_only_way_to_change_status(kube):
    core = client.CoreV1Api(kube.api)
    # Bound to a node that does not exist, so the simulated scheduler and kubelet leave it alone.
    created = core.create_namespaced_pod("default", pod("p", node_name="elsewhere"))
    assert created.status.phase == "Pending"
    ignored = core.patch_namespaced_pod("p", "default", {"status": {"phase": "Running"}, "metadata": {
        "labels": {"seen": "yes"}}})
    assert ignored.status.phase == "Pending" and ignored.metadata.labels == {"seen": "yes"}
    running = core.patch_namespaced_pod_status("p", "default", {"status": {"phase": "Running"}, "metadata": {
        "labels": {"ignored": "yes"}}})
    assert running.status.phase == "Running" and running.metadata.labels == {"seen": "yes"}
    assert core.read_namespaced_pod_status("p", "default").status.phase == "Running"
    running.status.phase = "Succeeded"
    assert core.replace_namespaced_pod_status("p", "default", running).status.phase == "Succeeded"


def test_pod_logs_come_from_the_sandbox_store(kube):
    core = client.CoreV1Api(kube.api)
    core.create_namespaced_pod("default", pod("worker", node_name="elsewhere"))

    def log(**kw) -> str:
        # Client 36 returns text logs as a bytes repr unless the raw response is read.
        return core.read_namespaced_pod_log("worker", "default", _preload_content=False, **kw).data.decode()

    assert log() == ""
    with kube.sandbox.store.lock:
        kube.sandbox.kube(CLUSTER).data["logs"]["default/worker"] = "loading model\nserving on :8000\n"
    assert log() == "loading model\nserving on :8000\n"
    assert log(tail_lines=1) == "serving on :8000\n"
    with pytest.raises(ApiException) as exc:
        core.read_namespaced_pod_log("nobody", "default")
    assert exc.value.status == 404


def test_dry_run_create_and_delete_store_nothing(kube):
    core = client.CoreV1Api(kube.api)
    preview = core.create_namespaced_config_map(
        "default", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="preview"), data={"a": "1"}), dry_run="All")
    assert preview.metadata.name == "preview" and preview.data == {"a": "1"}
    assert core.list_namespaced_config_map("default").items == []
    core.create_namespaced_config_map("default", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="kept")))
    core.delete_namespaced_config_map("kept", "default", dry_run="All")
    assert core.read_namespaced_config_map("kept", "default").metadata.name == "kept"


def test_a_one_shot_watch_streams_the_current_objects(kube):
    core = client.CoreV1Api(kube.api)
    core.create_namespaced_config_map("default", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="w")))
    events = list(kubernetes.watch.Watch().stream(core.list_namespaced_config_map, "default", timeout_seconds=1))
    assert [(e["type"], e["object"].metadata.name) for e in events] == [("ADDED", "w")]


# ---- errors ----------------------------------------------------------------------------------------------


def test_errors_carry_the_kubernetes_status_code_and_reason(kube):
    core = client.CoreV1Api(kube.api)
    with pytest.raises(ApiException) as missing:
        core.read_namespaced_config_map("absent", "default")
    assert (missing.value.status, missing.value.reason) == (404, "Not Found")
    assert status_of(missing.value) == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": 'configmaps "absent" not found', "reason": "NotFound", "code": 404,
        "details": {"name": "absent", "kind": "configmaps"}}

    cm = client.V1ConfigMap(metadata=client.V1ObjectMeta(name="once"))
    core.create_namespaced_config_map("default", cm)
    with pytest.raises(ApiException) as exists:
        core.create_namespaced_config_map("default", cm)
    assert (exists.value.status, exists.value.reason) == (409, "Conflict")
    assert status_of(exists.value)["reason"] == "AlreadyExists"

    with pytest.raises(ApiException) as invalid:
        core.create_namespaced_config_map("default", client.V1ConfigMap(metadata=client.V1ObjectMeta()))
    assert (invalid.value.status, invalid.value.reason) == (422, "Unprocessable Entity")
    assert status_of(invalid.value)["reason"] == "Invalid"


def test_replacing_with_a_stale_resource_version_conflicts(kube):
    core = client.CoreV1Api(kube.api)
    first = core.create_namespaced_config_map(
        "default", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="cfg"), data={"v": "1"}))
    second = core.read_namespaced_config_map("cfg", "default")
    second.data["v"] = "2"
    core.replace_namespaced_config_map("cfg", "default", second)
    first.data["v"] = "stale"
    with pytest.raises(ApiException) as exc:
        core.replace_namespaced_config_map("cfg", "default", first)
    assert exc.value.status == 409 and status_of(exc.value)["reason"] == "Conflict"
    assert core.read_namespaced_config_map("cfg", "default").data == {"v": "2"}


def test_a_malformed_json_body_is_a_bad_request_and_the_server_keeps_answering(kube):
    code, body = raw(kube, "POST", "/api/v1/namespaces/default/configmaps", b'{"metadata": {"name": ')
    assert code == 400
    status = json.loads(body)
    assert (status["kind"], status["status"], status["reason"], status["code"]) == ("Status", "Failure",
                                                                                    "BadRequest", 400)
    code, body = raw(kube, "POST", "/api/v1/namespaces/default/configmaps", b'["not", "an", "object"]')
    assert code == 400
    code, _ = raw(kube, "PUT", "/api/v1/namespaces/default/configmaps/x", b"\xff\xfe")
    assert code == 400
    assert client.CoreV1Api(kube.api).list_namespaced_config_map("default").items == []


def test_an_unsupported_method_is_not_allowed(kube):
    code, body = raw(kube, "POST", "/api/v1/namespaces/default/configmaps/x", b"{}")
    assert code == 405 and json.loads(body)["reason"] == "MethodNotAllowed"


# ---- calls, faults, drift ----------------------------------------------------------------------------------


def test_calls_are_counted_by_verb_and_resource_and_faults_hit_them(kube):
    core = client.CoreV1Api(kube.api)
    kube.sandbox.counters.reset()
    core.list_namespaced_pod("default")
    core.create_namespaced_config_map("default", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="c")))
    core.patch_namespaced_config_map("c", "default", {"data": {"a": "1"}})
    calls = kube.sandbox.counters.snapshot()["kubernetes"]
    assert calls["methods"] == {"list:pods": 1, "create:configmaps": 1, "patch:configmaps": 1}
    assert (calls["read"], calls["mutate"]) == (1, 2)

    kube.sandbox.faults.add("kubernetes", "list:pods", "503", 1)
    kube.sandbox.faults.add("kubernetes", "create:*", "429", 1)
    with pytest.raises(ApiException) as unavailable:
        core.list_namespaced_pod("default")
    assert unavailable.value.status == 503 and status_of(unavailable.value)["reason"] == "ServiceUnavailable"
    with pytest.raises(ApiException) as throttled:
        core.create_namespaced_config_map("default", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="d")))
    assert throttled.value.status == 429 and status_of(throttled.value)["reason"] == "TooManyRequests"
    assert core.list_namespaced_pod("default").items == []


def test_drift_is_injected_through_the_admin_api_without_counting_a_client_call(kube):
    core = client.CoreV1Api(kube.api)
    core.create_namespaced_config_map("default", client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="c", labels={"owner": "gpuplat"}, annotations={"keep": "1"}),
        data={"a": "1"}))
    kube.sandbox.counters.reset()
    base = {"apiVersion": "v1", "kind": "ConfigMap", "namespace": "default", "name": "c"}
    admin_post(kube, f"/sandbox/kube/{CLUSTER}/drift", {**base, "action": "label", "key": "owner", "value": "someone"})
    admin_post(kube, f"/sandbox/kube/{CLUSTER}/drift", {**base, "action": "annotate", "key": "keep", "value": None})
    admin_post(kube, f"/sandbox/kube/{CLUSTER}/drift", {**base, "action": "merge", "patch": {"data": {"a": "9"}}})
    assert kube.sandbox.counters.snapshot()["_total"] == {"read": 0, "mutate": 0}
    drifted = core.read_namespaced_config_map("c", "default")
    assert drifted.metadata.labels == {"owner": "someone"}
    assert drifted.metadata.annotations is None
    assert drifted.data == {"a": "9"}
    assert "sandbox-drift" in [m.manager for m in drifted.metadata.managed_fields]
    admin_post(kube, f"/sandbox/kube/{CLUSTER}/drift", {**base, "action": "delete"})
    assert core.list_namespaced_config_map("default").items == []
    with pytest.raises(urllib.error.HTTPError) as exc:
        admin_post(kube, f"/sandbox/kube/{CLUSTER}/drift", {**base, "action": "delete"})
    assert exc.value.code == 404


# ---- concurrency -----------------------------------------------------------------------------------------


def test_two_clients_in_threads_lose_no_update_and_see_every_object(kube):
    core = client.CoreV1Api(kube.api)
    core.create_namespaced_config_map("default", client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="counter"), data={"n": "0"}))
    rounds, errors, conflicts = 15, [], []

    def worker(tag: str):
        try:
            api = new_client(kube)
            mine = client.CoreV1Api(api)
            for i in range(rounds):
                mine.create_namespaced_config_map("default", client.V1ConfigMap(
                    metadata=client.V1ObjectMeta(name=f"{tag}-{i}", labels={"writer": tag})))
                mine.patch_namespaced_config_map(f"{tag}-{i}", "default", {"data": {"i": str(i)}})
                while True:  # read, modify, replace with the read resourceVersion; retry on 409
                    cm = mine.read_namespaced_config_map("counter", "default")
                    cm.data["n"] = str(int(cm.data["n"]) + 1)
                    try:
                        mine.replace_namespaced_config_map("counter", "default", cm)
                        break
                    except ApiException as exc:
                        if exc.status != 409:
                            raise
                        conflicts.append(tag)
            api.close()
        except Exception as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(tag,)) for tag in ("left", "right")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert core.read_namespaced_config_map("counter", "default").data == {"n": str(2 * rounds)}
    for tag in ("left", "right"):
        made = core.list_namespaced_config_map("default", label_selector=f"writer={tag}").items
        assert sorted(int(cm.data["i"]) for cm in made) == list(range(rounds))


# ---- kubectl ---------------------------------------------------------------------------------------------

needs_kubectl = pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")


def kubectl(kube, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["kubectl", "--kubeconfig", str(kube.kubeconfig), *args], capture_output=True, text=True,
                          timeout=60)


@needs_kubectl
def test_kubectl_gets_nodes_as_json(kube):
    client.CoreV1Api(kube.api).create_node(node("gpu-1", {"pool": "gpu"}))
    result = kubectl(kube, "get", "nodes", "-o", "json")
    assert result.returncode == 0, result.stderr
    listed = json.loads(result.stdout)
    assert [n["metadata"]["name"] for n in listed["items"]] == ["gpu-1"]
    selected = kubectl(kube, "get", "nodes", "-l", "pool in (cpu)", "-o", "name")
    assert selected.returncode == 0 and selected.stdout == "", selected.stderr


@needs_kubectl
def test_kubectl_applies_a_configmap_server_side(kube):
    manifest = kube.tmp_path / "cm.yaml"
    manifest.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: platform\n  namespace: default\n"
                        "data:\n  repoURL: https://example.com/fork.git\n")
    versions = []
    for _ in range(2):  # the second apply is a no-op: the object's resourceVersion does not move
        result = kubectl(kube, "apply", "--server-side", "-f", str(manifest))
        assert result.returncode == 0, result.stderr
        assert "configmap/platform serverside-applied" in result.stdout
        versions.append(client.CoreV1Api(kube.api).read_namespaced_config_map("platform", "default")
                        .metadata.resource_version)
    assert versions[0] == versions[1], versions
    cm = client.CoreV1Api(kube.api).read_namespaced_config_map("platform", "default")
    assert cm.data == {"repoURL": "https://example.com/fork.git"}
    assert [(m.manager, m.operation) for m in cm.metadata.managed_fields] == [("kubectl", "Apply")]

