"""The sandbox's simulated controllers through the official clients: pre-provisioned clusters, the
Argo CD bootstrap Job, Applications and ApplicationSets, External Secrets Operator, the GPU Operator
and the preflight probe run by the simulated kubelet. The autoscaler has test_autoscaler.py."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import kubernetes
import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException
from tests.conftest import admin, kube_api

BYO = "byo-gpu"
HETZNER = "hetzner-gpu"
BYO_GPU_NODE = "byo-gpu-h100-1"
HETZNER_GPU_NODE = "hz-gex44-1"
PROJECT = "gpuplat-test"
HOST_PROFILE = "sandbox.gpuplat.io/host-profile"


# ---- helpers shared with test_autoscaler.py ------------------------------------------------------------



def admin_error(sb, method: str, path: str, body=None) -> tuple[int, dict]:
    with pytest.raises(urllib.error.HTTPError) as info:
        admin(sb, method, path, body)
    return info.value.code, json.loads(info.value.read())


def events_for(core: client.CoreV1Api, namespace: str, name: str) -> list:
    return [e for e in core.list_namespaced_event(namespace).items if e.involved_object.name == name]


def assert_quiet(sb) -> None:
    """Controllers in a steady state write nothing: no store change, no new resourceVersion."""
    with sb.store.lock:
        sb.reconcile()
        sb.store.save_if_dirty()
        rvs = {cid: sb.kube(cid).data["rv"] for cid in sb.kube_cluster_ids()}
        for _ in range(3):
            sb.reconcile()
        assert sb.store.dirty is False
        assert {cid: sb.kube(cid).data["rv"] for cid in sb.kube_cluster_ids()} == rvs


def advance(sb, seconds: float) -> None:
    admin(sb, "POST", "/sandbox/clock/advance", {"seconds": seconds})


# ---- Argo CD helpers ----------------------------------------------------------------------------------------
def ensure_namespace(core: client.CoreV1Api, name: str) -> None:
    try:
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    except ApiException as exc:
        if exc.status != 409:
            raise


def install_argocd(api: client.ApiClient, chart_version: str = "9.1.4") -> client.V1Job:
    """What gpuplat does: a Job in `argocd` that runs helm from a container."""
    core, batch = client.CoreV1Api(api), client.BatchV1Api(api)
    ensure_namespace(core, "argocd")
    job = client.V1Job(
        metadata=client.V1ObjectMeta(name="argocd-bootstrap", namespace="argocd",
                                     labels={"app.kubernetes.io/name": "argocd-bootstrap"},
                                     annotations={"gpuplat.io/chart-version": chart_version}),
        spec=client.V1JobSpec(backoff_limit=2, template=client.V1PodTemplateSpec(spec=client.V1PodSpec(
            restart_policy="Never", containers=[client.V1Container(
                name="helm", image="alpine/helm:3.16.4",
                args=["upgrade", "--install", "argocd", "argo-cd", "--repo", "https://argoproj.github.io/argo-helm",
                      "--version", chart_version, "--namespace", "argocd"])]))))
    batch.create_namespaced_job("argocd", job)
    return batch.read_namespaced_job("argocd-bootstrap", "argocd")


def appset(layer: str, cluster_name: str = "ai-dev", selector: dict | None = None, labelled: bool = False) -> dict:
    """The ApplicationSet gpuplat applies per layer (git files generator on the fork)."""
    gen: dict = {"git": {"repoURL": "https://github.com/example/fork", "revision": "main",
                         "files": [{"path": f"clusters/{cluster_name}/groups.generated.yaml"}]}}
    if selector is not None:
        gen["selector"] = selector
    obj = {
        "apiVersion": "argoproj.io/v1alpha1", "kind": "ApplicationSet",
        "metadata": {"name": f"layer-{layer}", "namespace": "argocd"},
        "spec": {
            "goTemplate": True,
            "generators": [gen],
            "template": {
                "metadata": {"name": "group-{{.name}}", "labels": {"gpuplat.io/layer": "{{.layer}}"}},
                "spec": {"project": "platform",
                         "source": {"repoURL": "https://github.com/example/fork", "targetRevision": "main",
                                    "path": "{{.catalogPath}}", "directory": {"recurse": True}},
                         "destination": {"server": "https://kubernetes.default.svc"},
                         "syncPolicy": {"automated": {"prune": True, "selfHeal": True},
                                        "syncOptions": ["ServerSideApply=true"]}}},
        },
    }
    if labelled:
        obj["metadata"]["labels"] = {"gpuplat.io/layer": layer}
    return obj


def applications(custom: client.CustomObjectsApi) -> dict[str, dict]:
    items = custom.list_namespaced_custom_object("argoproj.io", "v1alpha1", "argocd", "applications")["items"]
    return {a["metadata"]["name"]: a for a in items}


def platform_selector(layer: str = "platform") -> dict:
    return {"matchLabels": {"enabled": "true", "layer": layer}}


@pytest.fixture
def byo(sandbox, tmp_path):
    api = kube_api(sandbox, tmp_path, BYO)
    yield api
    api.close()


@pytest.fixture
def hetzner(sandbox, tmp_path):
    api = kube_api(sandbox, tmp_path, HETZNER)
    yield api
    api.close()


@pytest.fixture
def byo_argocd(sandbox, byo):
    """The byo cluster with Argo CD installed and the platform layer generated (so ESO is there)."""
    install_argocd(byo)
    client.CustomObjectsApi(byo).create_namespaced_custom_object(
        "argoproj.io", "v1alpha1", "argocd", "applicationsets", appset("platform", selector=platform_selector()))
    return byo


# ---- the pre-provisioned clusters ---------------------------------------------------------------------------
def test_byo_cluster_looks_like_a_kubeadm_cluster_with_an_unadvertised_h100(byo):
    core, storage = client.CoreV1Api(byo), client.StorageV1Api(byo)
    nodes = {n.metadata.name: n for n in core.list_node().items}
    assert {"byo-control-plane-1", "byo-worker-1", BYO_GPU_NODE} <= set(nodes)
    assert all(n.spec.provider_id is None for n in nodes.values())
    gpu = nodes[BYO_GPU_NODE]
    assert "nvidia.com/gpu" not in (gpu.status.allocatable or {})
    profile = json.loads(gpu.metadata.annotations[HOST_PROFILE])
    assert profile["gpu"]["model"] == "NVIDIA H100 80GB HBM3" and profile["gpu"]["computeCapability"] == "9.0"
    assert profile["driver"] == {"installed": True, "version": "580.159.04", "flavour": "open", "cudaVersion": "13.0"}
    assert profile["kernel"]["headers"] is False and profile["secureBoot"] == "unknown"
    assert {ns.metadata.name for ns in core.list_namespace().items} >= {"default", "kube-system", "kube-public"}
    classes = storage.list_storage_class().items
    assert [(c.metadata.name, c.provisioner) for c in classes] == [("local-path", "rancher.io/local-path")]
    assert not (classes[0].metadata.annotations or {}).get("storageclass.kubernetes.io/is-default-class")
    with pytest.raises(ApiException) as info:  # no external-snapshotter: a real 404
        client.CustomObjectsApi(byo).list_cluster_custom_object("snapshot.storage.k8s.io", "v1",
                                                                "volumesnapshotclasses")
    assert info.value.status == 404


def test_hetzner_cluster_has_hcloud_and_robot_nodes_and_two_default_storage_classes(hetzner):
    core, storage = client.CoreV1Api(hetzner), client.StorageV1Api(hetzner)
    nodes = {n.metadata.name: n for n in core.list_node().items}
    cpu = [n for n in nodes.values() if n.metadata.labels.get("node.kubernetes.io/instance-type") == "cpx41"]
    assert cpu and all(n.spec.provider_id.startswith("hcloud://") for n in cpu)
    gex = nodes[HETZNER_GPU_NODE]
    assert gex.spec.provider_id.startswith("hrobot://")
    assert gex.metadata.labels["node.kubernetes.io/instance-type"] == "GEX44"
    profile = json.loads(gex.metadata.annotations[HOST_PROFILE])
    assert profile["gpu"]["model"] == "NVIDIA RTX 4000 SFF Ada Generation"
    assert profile["gpu"]["computeCapability"] == "8.9"
    assert profile["driver"]["installed"] is False and profile["kernel"]["headers"] is True
    assert profile["secureBoot"] == "disabled"
    defaults = sorted(c.metadata.name for c in storage.list_storage_class().items
                      if (c.metadata.annotations or {}).get("storageclass.kubernetes.io/is-default-class") == "true")
    assert defaults == ["hcloud-volumes", "local-path"]
    assert client.CustomObjectsApi(hetzner).list_cluster_custom_object(
        "snapshot.storage.k8s.io", "v1", "volumesnapshotclasses")["items"] == []


def test_bootstrap_keeps_what_is_already_in_the_state(tmp_path):
    from sandbox.app import Sandbox
    from tests.conftest import EPHEMERAL

    state = tmp_path / "state"
    sb = Sandbox(state, ports=EPHEMERAL)
    sb.start()
    try:
        admin(sb, "PUT", f"/sandbox/kube/{HETZNER}/host-profile", {"node": HETZNER_GPU_NODE,
                                                                   "profile": {"secureBoot": "enabled"}})
    finally:
        sb.stop()
    again = Sandbox(state, ports=EPHEMERAL)
    with again.store.lock:
        node = again.kube(HETZNER).get_object("", "nodes", None, HETZNER_GPU_NODE)
    profile = json.loads(node["metadata"]["annotations"][HOST_PROFILE])
    assert profile["secureBoot"] == "enabled" and profile["kernel"]["headers"] is True  # merged, not replaced


def test_host_profile_admin_validates_and_merges(sandbox):
    code, body = admin_error(sandbox, "PUT", f"/sandbox/kube/{BYO}/host-profile",
                             {"node": BYO_GPU_NODE, "profile": {"secureBoot": "maybe"}})
    assert code == 400 and "secureBoot" in body["error"]["message"]
    code, _ = admin_error(sandbox, "PUT", f"/sandbox/kube/{BYO}/host-profile", {"node": "nope", "profile": {}})
    assert code == 404
    out = admin(sandbox, "PUT", f"/sandbox/kube/{BYO}/host-profile",
                {"node": BYO_GPU_NODE, "profile": {"kernel": {"headers": True}}})
    assert out["profile"]["kernel"] == {"release": "6.18.44-fc-v657-gpu", "headers": True}
    assert admin(sandbox, "GET", f"/sandbox/kube/{BYO}/host-profile")["profiles"][BYO_GPU_NODE]["kernel"]["headers"]


def test_an_idle_sandbox_writes_nothing(sandbox, byo_argocd):
    core = client.CoreV1Api(byo_argocd)
    core.list_node()  # let every controller settle
    with sandbox.store.lock:
        rv = sandbox.kube(BYO).data["rv"]
        sandbox.store.dirty = False
        sandbox.reconcile()
        assert sandbox.store.dirty is False
    for _ in range(3):
        core.list_pod_for_all_namespaces()
    with sandbox.store.lock:
        assert sandbox.kube(BYO).data["rv"] == rv


# ---- Argo CD --------------------------------------------------------------------------------------------------
def test_bootstrap_job_installs_argocd_and_completes(byo):
    job = install_argocd(byo, "9.1.4")
    assert job.status.succeeded == 1
    assert [c.type for c in job.status.conditions if c.status == "True"] == ["SuccessCriteriaMet", "Complete"]
    ext = client.ApiextensionsV1Api(byo)
    crds = {c.metadata.name: c for c in ext.list_custom_resource_definition().items}
    for name in ("applications.argoproj.io", "applicationsets.argoproj.io", "appprojects.argoproj.io"):
        assert crds[name].spec.scope == "Namespaced" and crds[name].spec.versions[0].name == "v1alpha1"
    apps = client.AppsV1Api(byo)
    for name in ("argocd-server", "argocd-repo-server", "argocd-applicationset-controller"):
        dep = apps.read_namespaced_deployment(name, "argocd")
        assert dep.status.ready_replicas == 1 and dep.metadata.labels["helm.sh/chart"] == "argo-cd-9.1.4"
    sts = apps.read_namespaced_stateful_set("argocd-application-controller", "argocd")
    assert sts.status.ready_replicas == 1
    pods = client.CoreV1Api(byo).list_namespaced_pod("argocd", label_selector="job-name=argocd-bootstrap").items
    assert len(pods) == 1 and pods[0].status.phase == "Succeeded"
    log = client.CoreV1Api(byo).read_namespaced_pod_log(pods[0].metadata.name, "argocd")
    assert "STATUS: deployed" in log and "argo-cd-9.1.4" in log


def test_a_job_without_the_chart_annotation_is_not_run(byo):
    core, batch = client.CoreV1Api(byo), client.BatchV1Api(byo)
    ensure_namespace(core, "argocd")
    batch.create_namespaced_job("argocd", client.V1Job(
        metadata=client.V1ObjectMeta(name="other", labels={"app.kubernetes.io/name": "argocd-bootstrap"}),
        spec=client.V1JobSpec(template=client.V1PodTemplateSpec(spec=client.V1PodSpec(
            restart_policy="Never", containers=[client.V1Container(name="x", image="busybox")])))))
    status = batch.read_namespaced_job("other", "argocd").status
    names = [c.metadata.name for c in client.ApiextensionsV1Api(byo).list_custom_resource_definition().items]
    assert "applications.argoproj.io" not in names
    # The controller does run in this namespace: the annotated Job beside it completes, the other never.
    assert install_argocd(byo).status.succeeded == 1
    status = batch.read_namespaced_job("other", "argocd").status
    assert not (status and status.succeeded) and not (status and status.active)


def test_applicationset_generates_synced_healthy_group_applications(byo_argocd):
    custom = client.CustomObjectsApi(byo_argocd)
    apps = applications(custom)
    assert set(apps) == {"group-argocd", "group-external-secrets", "group-cert-manager", "group-monitoring"}
    app = apps["group-cert-manager"]
    assert app["spec"]["source"]["path"] == "catalog/platform/cert-manager"
    assert app["metadata"]["labels"] == {"gpuplat.io/layer": "platform"}
    owner = app["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["controller"]) == ("ApplicationSet", "layer-platform", True)
    status = app["status"]
    assert status["sync"]["status"] == "Synced" and len(status["sync"]["revision"]) == 40
    assert status["health"]["status"] == "Healthy"
    assert status["operationState"]["phase"] == "Succeeded"
    aset = custom.get_namespaced_custom_object("argoproj.io", "v1alpha1", "argocd", "applicationsets",
                                               "layer-platform")
    conds = {c["type"]: c["status"] for c in aset["status"]["conditions"]}
    assert conds == {"ErrorOccurred": "False", "ParametersGenerated": "True", "ResourcesUpToDate": "True"}
    # group-external-secrets Healthy: the platform layer's ESO is there
    crds = [c.metadata.name for c in client.ApiextensionsV1Api(byo_argocd).list_custom_resource_definition().items]
    assert {"externalsecrets.external-secrets.io", "clustersecretstores.external-secrets.io",
            "secretstores.external-secrets.io"} <= set(crds)


@pytest.mark.parametrize("variant", ["matchExpressions", "layer label"])
def test_applicationset_reads_the_layer_from_expressions_or_its_label(sandbox, byo, variant):
    install_argocd(byo)
    admin(sandbox, "PUT", "/sandbox/gitops", {"cluster": BYO, "groups": [
        {"name": "kserve", "layer": "serving", "enabled": "true", "catalogPath": "catalog/serving/kserve"},
        {"name": "vllm", "layer": "serving", "enabled": "false", "catalogPath": "catalog/serving/vllm"},
        {"name": "litellm", "layer": "llm-gateway", "enabled": True, "catalogPath": "catalog/llm-gateway/litellm"},
    ]})
    if variant == "matchExpressions":
        obj = appset("serving", selector={"matchExpressions": [
            {"key": "enabled", "operator": "In", "values": ["true"]},
            {"key": "layer", "operator": "In", "values": ["serving"]}]})
    else:
        obj = appset("serving", labelled=True)
    custom = client.CustomObjectsApi(byo)
    custom.create_namespaced_custom_object("argoproj.io", "v1alpha1", "argocd", "applicationsets", obj)
    assert set(applications(custom)) == {"group-kserve"}


def test_applicationset_follows_the_groups_file_and_prunes(sandbox, byo_argocd):
    custom = client.CustomObjectsApi(byo_argocd)
    # Keyed by the cluster name in the fork's path, as a user of the environment config would.
    admin(sandbox, "PUT", "/sandbox/gitops", {"cluster": "ai-dev", "groups": [
        {"name": "external-secrets", "layer": "platform", "enabled": "true",
         "catalogPath": "catalog/platform/external-secrets"},
        {"name": "monitoring", "layer": "platform", "enabled": "false", "catalogPath": "catalog/platform/monitoring"},
    ]})
    assert set(applications(custom)) == {"group-external-secrets"}
    admin(sandbox, "PUT", "/sandbox/gitops", {"cluster": "ai-dev", "groups": None})
    assert "group-monitoring" in applications(custom)
    # Deleting the ApplicationSet takes its Applications with it (the garbage collector's part).
    custom.delete_namespaced_custom_object("argoproj.io", "v1alpha1", "argocd", "applicationsets", "layer-platform")
    assert applications(custom) == {}


def test_app_status_override_and_clear(sandbox, byo_argocd):
    custom = client.CustomObjectsApi(byo_argocd)
    out = admin(sandbox, "POST", "/sandbox/argocd/app-status",
                {"cluster": BYO, "name": "group-monitoring", "sync": "OutOfSync", "health": "Degraded"})
    assert out["override"] == {"sync": "OutOfSync", "health": "Degraded"}
    status = applications(custom)["group-monitoring"]["status"]
    assert (status["sync"]["status"], status["health"]["status"]) == ("OutOfSync", "Degraded")
    assert status["operationState"]["phase"] == "Failed"
    admin(sandbox, "POST", "/sandbox/argocd/app-status", {"cluster": BYO, "name": "group-monitoring", "sync": None})
    status = applications(custom)["group-monitoring"]["status"]
    assert (status["sync"]["status"], status["health"]["status"]) == ("Synced", "Degraded")
    admin(sandbox, "POST", "/sandbox/argocd/app-status", {"cluster": BYO, "name": "group-monitoring", "health": None})
    assert applications(custom)["group-monitoring"]["status"]["health"]["status"] == "Healthy"
    code, _ = admin_error(sandbox, "POST", "/sandbox/argocd/app-status",
                          {"cluster": BYO, "name": "group-monitoring", "sync": "Sideways"})
    assert code == 400


# ---- External Secrets Operator -------------------------------------------------------------------------------
def cluster_store(provider: dict) -> dict:
    return {"apiVersion": "external-secrets.io/v1", "kind": "ClusterSecretStore",
            "metadata": {"name": "secret-store"}, "spec": {"provider": provider}}


def key_store(core) -> dict:
    """A gcpsm store authenticated by a service-account key, as off GKE (no Workload Identity there)."""
    ensure_namespace(core, "external-secrets")
    core.create_namespaced_secret("external-secrets", client.V1Secret(
        metadata=client.V1ObjectMeta(name="secret-store-key"), string_data={"sa-key.json": "{}"}))
    return cluster_store({"gcpsm": {"projectID": PROJECT, "auth": {"secretRef": {"secretAccessKeySecretRef": {
        "name": "secret-store-key", "key": "sa-key.json", "namespace": "external-secrets"}}}}})


def external_secret(name: str, keys: dict[str, str], namespace: str = "default", target: str | None = None) -> dict:
    spec: dict = {"refreshInterval": "1h", "secretStoreRef": {"kind": "ClusterSecretStore", "name": "secret-store"},
                  "data": [{"secretKey": k, "remoteRef": {"key": v}} for k, v in keys.items()]}
    if target:
        spec["target"] = {"name": target}
    return {"apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def ready_condition(obj: dict) -> dict:
    return next(c for c in obj["status"]["conditions"] if c["type"] == "Ready")


def add_gcp_secret(sandbox, secret_id: str, value: bytes) -> None:
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import secretmanager_v1

    sm = secretmanager_v1.SecretManagerServiceClient(
        transport="rest", credentials=AnonymousCredentials(),
        client_options=ClientOptions(api_endpoint=sandbox.urls()["secretmanager"]))
    secret = sm.create_secret(parent=f"projects/{PROJECT}", secret_id=secret_id,
                              secret={"replication": {"automatic": {}}})
    sm.add_secret_version(parent=secret.name, payload={"data": value})


def test_eso_materialises_a_secret_from_the_fake_secret_manager(sandbox, byo_argocd):
    custom, core = client.CustomObjectsApi(byo_argocd), client.CoreV1Api(byo_argocd)
    add_gcp_secret(sandbox, "hf-token", b"hf_abcdef123")
    custom.create_cluster_custom_object("external-secrets.io", "v1", "clustersecretstores", key_store(core))
    store = custom.get_cluster_custom_object("external-secrets.io", "v1", "clustersecretstores", "secret-store")
    assert ready_condition(store)["status"] == "True"
    custom.create_namespaced_custom_object("external-secrets.io", "v1", "default", "externalsecrets",
                                           external_secret("hf", {"HF_TOKEN": "hf-token"}, target="hf-secret"))
    es = custom.get_namespaced_custom_object("external-secrets.io", "v1", "default", "externalsecrets", "hf")
    cond = ready_condition(es)
    assert (cond["status"], cond["reason"]) == ("True", "SecretSynced")
    secret = core.read_namespaced_secret("hf-secret", "default")
    assert base64.b64decode(secret.data["HF_TOKEN"]) == b"hf_abcdef123"
    assert secret.metadata.owner_references[0].kind == "ExternalSecret"
    rv = secret.metadata.resource_version
    core.list_namespaced_secret("default")
    assert core.read_namespaced_secret("hf-secret", "default").metadata.resource_version == rv  # no rewrite
    assert_quiet(sandbox)


def test_eso_reports_a_missing_key_by_name_never_by_value(sandbox, byo_argocd):
    custom, core = client.CustomObjectsApi(byo_argocd), client.CoreV1Api(byo_argocd)
    add_gcp_secret(sandbox, "present", b"s3cr3t-value")
    custom.create_cluster_custom_object("external-secrets.io", "v1", "clustersecretstores", key_store(core))
    custom.create_namespaced_custom_object("external-secrets.io", "v1", "default", "externalsecrets",
                                           external_secret("app", {"A": "present", "B": "openai-api-key"}))
    es = custom.get_namespaced_custom_object("external-secrets.io", "v1", "default", "externalsecrets", "app")
    cond = ready_condition(es)
    assert (cond["status"], cond["reason"]) == ("False", "SecretSyncedError")
    assert "openai-api-key" in cond["message"] and "s3cr3t-value" not in json.dumps(es)
    with pytest.raises(ApiException):
        core.read_namespaced_secret("app", "default")
    assert_quiet(sandbox)
    warnings = [e for e in events_for(core, "default", "app") if e.reason == "UpdateFailed"]
    assert len(warnings) == 1 and "s3cr3t" not in warnings[0].message
    add_gcp_secret(sandbox, "openai-api-key", b"sk-123")
    assert ready_condition(custom.get_namespaced_custom_object(
        "external-secrets.io", "v1", "default", "externalsecrets", "app"))["status"] == "True"
    assert set(core.read_namespaced_secret("app", "default").data) == {"A", "B"}


def test_eso_other_backends_and_an_empty_provider(sandbox, byo_argocd):
    custom, core = client.CustomObjectsApi(byo_argocd), client.CoreV1Api(byo_argocd)
    custom.create_cluster_custom_object("external-secrets.io", "v1", "clustersecretstores", cluster_store({}))
    store = custom.get_cluster_custom_object("external-secrets.io", "v1", "clustersecretstores", "secret-store")
    cond = ready_condition(store)
    assert (cond["status"], cond["reason"]) == ("False", "InvalidProviderConfig")
    custom.create_namespaced_custom_object("external-secrets.io", "v1", "default", "externalsecrets",
                                           external_secret("tok", {"HF_TOKEN": "hf-token"}))
    out = admin(sandbox, "PUT", f"/sandbox/backends/{BYO}", {"values": {"hf-token": "hf_vault_value"}})
    assert out == {"cluster": BYO, "keys": ["hf-token"]}  # keys only, never values
    es = custom.get_namespaced_custom_object("external-secrets.io", "v1", "default", "externalsecrets", "tok")
    assert ready_condition(es)["status"] == "False"  # the store has no provider yet
    store["spec"]["provider"] = {"vault": {"server": "https://vault.example.com", "path": "secret"}}
    custom.replace_cluster_custom_object("external-secrets.io", "v1", "clustersecretstores", "secret-store", store)
    es = custom.get_namespaced_custom_object("external-secrets.io", "v1", "default", "externalsecrets", "tok")
    assert ready_condition(es)["reason"] == "SecretSynced"
    assert base64.b64decode(core.read_namespaced_secret("tok", "default").data["HF_TOKEN"]) == b"hf_vault_value"


# ---- the GPU Operator ---------------------------------------------------------------------------------------------
def operator_app(driver_enabled: bool) -> dict:
    return {"apiVersion": "argoproj.io/v1alpha1", "kind": "Application",
            "metadata": {"name": "nvidia-gpu-operator", "namespace": "argocd"},
            "spec": {"project": "platform",
                     "source": {"repoURL": "https://nvidia.github.io/gpu-operator", "chart": "gpu-operator",
                                "targetRevision": "v26.3.3",
                                "helm": {"valuesObject": {"driver": {"enabled": driver_enabled}}}},
                     "destination": {"server": "https://kubernetes.default.svc", "namespace": "gpu-operator"},
                     "syncPolicy": {"automated": {"prune": True, "selfHeal": True},
                                    "syncOptions": ["CreateNamespace=true", "ServerSideApply=true"]}}}


def cluster_policy(api) -> dict:
    return client.CustomObjectsApi(api).get_cluster_custom_object("nvidia.com", "v1", "clusterpolicies",
                                                                  "cluster-policy")


def gpu_allocatable(api, node: str) -> str | None:
    return (client.CoreV1Api(api).read_node(node).status.allocatable or {}).get("nvidia.com/gpu")


def test_gpu_operator_comes_up_on_the_byo_h100_with_its_driver_disabled(sandbox, byo):
    install_argocd(byo)
    client.CustomObjectsApi(byo).create_namespaced_custom_object("argoproj.io", "v1alpha1", "argocd",
                                                                 "applications", operator_app(False))
    policy = cluster_policy(byo)
    assert policy["spec"]["driver"]["enabled"] is False and policy["status"]["state"] == "notReady"
    assert gpu_allocatable(byo, BYO_GPU_NODE) is None
    advance(sandbox, 61)
    assert cluster_policy(byo)["status"]["state"] == "ready"
    assert gpu_allocatable(byo, BYO_GPU_NODE) == "1"
    ds = client.AppsV1Api(byo).read_namespaced_daemon_set("nvidia-dcgm-exporter", "gpu-operator")
    assert ds.status.number_ready == 1
    assert_quiet(sandbox)


@pytest.mark.parametrize("cluster,node,driver_enabled,profile,expect", [
    (BYO, BYO_GPU_NODE, True, None, "already loaded on the host"),
    (HETZNER, HETZNER_GPU_NODE, False, None, "driver.enabled=false"),
    (HETZNER, HETZNER_GPU_NODE, True, {"kernel": {"headers": False}}, "kernel headers"),
    (HETZNER, HETZNER_GPU_NODE, True, {"secureBoot": "enabled"}, "Secure Boot is enabled"),
], ids=["preinstalled driver and operator driver", "no driver and driver disabled", "no headers",
        "Ada with Secure Boot"])
def test_gpu_operator_stays_not_ready_when_a_host_cannot_run_it(sandbox, tmp_path, cluster, node, driver_enabled,
                                                                profile, expect):
    api = kube_api(sandbox, tmp_path, cluster)
    if profile:
        admin(sandbox, "PUT", f"/sandbox/kube/{cluster}/host-profile", {"node": node, "profile": profile})
    install_argocd(api)
    client.CustomObjectsApi(api).create_namespaced_custom_object("argoproj.io", "v1alpha1", "argocd",
                                                                 "applications", operator_app(driver_enabled))
    advance(sandbox, 120)
    policy = cluster_policy(api)
    assert policy["status"]["state"] == "notReady"
    ready = next(c for c in policy["status"]["conditions"] if c["type"] == "Ready")
    assert expect in ready["message"] and node in ready["message"]
    assert gpu_allocatable(api, node) in (None, "0")


def test_gpu_operator_on_hetzner_builds_its_driver_and_reads_helm_parameters(sandbox, hetzner):
    install_argocd(hetzner)
    app = operator_app(False)
    app["spec"]["source"]["helm"] = {"values": "driver:\n  enabled: false\n",
                                     "parameters": [{"name": "driver.enabled", "value": "true"}]}
    client.CustomObjectsApi(hetzner).create_namespaced_custom_object("argoproj.io", "v1alpha1", "argocd",
                                                                     "applications", app)
    advance(sandbox, 61)
    policy = cluster_policy(hetzner)
    assert policy["spec"]["driver"]["enabled"] is True and policy["status"]["state"] == "ready"
    node = client.CoreV1Api(hetzner).read_node(HETZNER_GPU_NODE)
    assert node.status.allocatable["nvidia.com/gpu"] == "1"
    assert node.metadata.labels["nvidia.com/gpu.present"] == "true"


def test_gpu_operator_waits_for_its_application_to_be_synced(sandbox, byo):
    install_argocd(byo)
    admin(sandbox, "POST", "/sandbox/argocd/app-status", {"cluster": BYO, "name": "nvidia-gpu-operator",
                                                          "sync": "OutOfSync"})
    client.CustomObjectsApi(byo).create_namespaced_custom_object("argoproj.io", "v1alpha1", "argocd",
                                                                 "applications", operator_app(False))
    advance(sandbox, 120)
    names = [c.metadata.name for c in client.ApiextensionsV1Api(byo).list_custom_resource_definition().items]
    assert "clusterpolicies.nvidia.com" not in names
    # Synced again: the operator rolls out (the wait was for the Application, not for ever).
    admin(sandbox, "POST", "/sandbox/argocd/app-status", {"cluster": BYO, "name": "nvidia-gpu-operator", "sync": None})
    advance(sandbox, 61)
    assert cluster_policy(byo)["status"]["state"] == "ready"


# ---- the preflight probe ------------------------------------------------------------------------------------------
def preflight_pod(node: str) -> client.V1Pod:
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=f"gpuplat-preflight-{node}", namespace="default",
                                     labels={"app.kubernetes.io/name": "gpuplat-preflight"}),
        spec=client.V1PodSpec(node_name=node, restart_policy="Never", host_pid=True,
                              tolerations=[client.V1Toleration(operator="Exists")],
                              containers=[client.V1Container(
                                  name="probe", image="python:3.12-slim",
                                  command=["python", "-m", "gpuplat_probe", "--host-root", "/host", "--json"],
                                  volume_mounts=[client.V1VolumeMount(name="host", mount_path="/host",
                                                                      read_only=True)])],
                              volumes=[client.V1Volume(name="host",
                                                       host_path=client.V1HostPathVolumeSource(path="/"))]))


def run_preflight(api, node: str) -> dict:
    core = client.CoreV1Api(api)
    core.create_namespaced_pod("default", preflight_pod(node))
    pod = core.read_namespaced_pod(f"gpuplat-preflight-{node}", "default")
    assert pod.status.phase == "Succeeded"
    assert pod.status.container_statuses[0].state.terminated.exit_code == 0
    # _preload_content=False: the client would json-decode a JSON log line and hand back str(dict).
    resp = core.read_namespaced_pod_log(f"gpuplat-preflight-{node}", "default", _preload_content=False)
    return json.loads(resp.data)


def test_preflight_pod_runs_the_probe_against_the_simulated_byo_h100(byo):
    report = run_preflight(byo, BYO_GPU_NODE)
    facts = report["facts"]
    assert report["schema"] == "gpuplat.probe.preflight/v1"
    assert facts["host_root"] == "/host"
    assert facts["gpus"][0]["product_name"] == "NVIDIA H100 80GB HBM3"
    assert facts["gpus"][0]["compute_capability"] == "9.0"
    assert (facts["driver_installed"], facts["driver_version"], facts["kernel_module_flavour"]) == \
        (True, "580.159.04", "open")
    assert facts["kernel_release"] == "6.18.44-fc-v657-gpu" and facts["headers_present"] is False
    assert (facts["os_id"], facts["os_version_id"]) == ("ubuntu", "24.04")
    assert facts["secure_boot"] == "unknown" and facts["uefi"] is False
    assert report["operator_driver_enabled"] is False


def test_preflight_pod_sees_the_hetzner_host_and_profile_changes(sandbox, hetzner):
    report = run_preflight(hetzner, HETZNER_GPU_NODE)
    facts = report["facts"]
    assert facts["driver_installed"] is False and facts["headers_present"] is True
    assert facts["secure_boot"] == "disabled" and facts["uefi"] is True
    assert facts["gpus"][0]["seen_by"] == "pci" and facts["gpus"][0]["pci_device_id"] == "0x27b0"
    assert report["operator_driver_enabled"] is True
    admin(sandbox, "PUT", f"/sandbox/kube/{HETZNER}/host-profile",
          {"node": HETZNER_GPU_NODE, "profile": {"secureBoot": "enabled", "kernel": {"headers": False}}})
    client.CoreV1Api(hetzner).delete_namespaced_pod(f"gpuplat-preflight-{HETZNER_GPU_NODE}", "default")
    report = run_preflight(hetzner, HETZNER_GPU_NODE)
    assert report["facts"]["secure_boot"] == "enabled" and report["facts"]["headers_present"] is False
    assert report["ok"] is False


def test_the_sandbox_runs_the_probe_without_importing_it():
    import re

    sandbox_dir = Path(__file__).resolve().parents[2] / "sandbox"
    modules = list(sandbox_dir.rglob("*.py"))
    assert any(p.name == "gpu.py" and p.parent.name == "sims" for p in modules)  # the one that runs the probe
    for path in modules:
        assert not re.search(r"^\s*(from|import)\s+gpuplat_probe", path.read_text(), re.M), path

