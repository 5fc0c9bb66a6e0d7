"""The sandbox's IAM, Resource Manager and Artifact Registry, through the official clients (IAM admin
over gRPC, the others over REST), and ESO's Workload Identity chain checked link by link.

Real behaviours reproduced, with their public sources:
- creating an existing service account: 409 ALREADY_EXISTS "Service account <id> already exists within
  project projects/<p>." (GoogleCloudPlatform/java-docs-samples#3605);
- setIamPolicy with a stale etag: 409 ABORTED "There were concurrent policy changes. ..."
  (DataBiosphere/leonardo#737);
- a Workload Identity member before any cluster of the project has Workload Identity: 400 "Identity
  Pool does not exist (<p>.svc.id.goog)." (terraform-google-modules/terraform-google-kubernetes-engine#916);
- a node pool whose service account does not exist: 400 `Service account "..." does not exist.`
  (sassoftware/viya4-iac-gcp#148);
- NodeConfig.oauth_scopes unset: only logging and monitoring scopes (container/v1 cluster_service.proto);
- a call to an API the project has not enabled: 403 SERVICE_DISABLED (google-gemini/gemini-cli#1343).
"""

from __future__ import annotations

import grpc
import pytest
from google.api_core import exceptions as gexc
from google.cloud import (artifactregistry_v1, container_v1, iam_admin_v1, resourcemanager_v3, service_usage_v1)
from google.cloud.iam_admin_v1.services.iam.transports import IAMGrpcTransport
from kubernetes import client

from tests.conftest import client_options, kube_api
from tests.sandbox.test_controllers import appset, install_argocd, platform_selector

PROJECT = "gpuplat-test"
PARENT = f"projects/{PROJECT}/locations/us-central1-a"
POOL = f"{PROJECT}.svc.id.goog"
ESO_SA = f"external-secrets@{PROJECT}.iam.gserviceaccount.com"
KSA_MEMBER = f"serviceAccount:{POOL}[external-secrets/external-secrets]"


@pytest.fixture
def gcp(sandbox):
    urls = sandbox.urls()
    su = service_usage_v1.ServiceUsageClient(**client_options(urls, "serviceusage"))
    su.batch_enable_services(request={"parent": f"projects/{PROJECT}", "service_ids": [
        "iam.googleapis.com", "container.googleapis.com", "artifactregistry.googleapis.com"]}).result(timeout=30)
    return type("Gcp", (), {
        "iam": iam_admin_v1.IAMClient(transport=IAMGrpcTransport(channel=grpc.insecure_channel(urls["iam_grpc"]))),
        "rm": resourcemanager_v3.ProjectsClient(**client_options(urls, "cloudresourcemanager")),
        "ar": artifactregistry_v1.ArtifactRegistryClient(**client_options(urls, "artifactregistry")),
        "gke": container_v1.ClusterManagerClient(**client_options(urls, "container")),
        "su": su})


def wait(gke, op):
    while op.status != container_v1.Operation.Status.DONE:
        op = gke.get_operation(name=f"{PARENT}/operations/{op.name}")
    return op


def create_cluster(gcp, workload_identity: bool = True):
    cluster = container_v1.Cluster(name="ai-dev", initial_node_count=1,
                                   ip_allocation_policy=container_v1.IPAllocationPolicy(use_ip_aliases=True))
    if workload_identity:
        cluster.workload_identity_config = container_v1.WorkloadIdentityConfig(workload_pool=POOL)
    return wait(gcp.gke, gcp.gke.create_cluster(parent=PARENT, cluster=cluster))


def add_binding(get, put, resource: str, role: str, member: str):
    policy = get(request={"resource": resource})
    policy.bindings.add(role=role, members=[member])
    return put(request={"resource": resource, "policy": policy})


def test_service_accounts_over_grpc_exist_once_with_google_emails(gcp):
    sa = gcp.iam.create_service_account(name=f"projects/{PROJECT}", account_id="gke-ai-dev-nodes",
                                        service_account=iam_admin_v1.ServiceAccount(display_name="GKE nodes"))
    assert sa.email == f"gke-ai-dev-nodes@{PROJECT}.iam.gserviceaccount.com" and sa.unique_id
    with pytest.raises(gexc.AlreadyExists, match="already exists within project projects/gpuplat-test"):
        gcp.iam.create_service_account(name=f"projects/{PROJECT}", account_id="gke-ai-dev-nodes")
    with pytest.raises(gexc.InvalidArgument, match="6-30 characters"):
        gcp.iam.create_service_account(name=f"projects/{PROJECT}", account_id="Bad_Name")
    assert gcp.iam.get_service_account(name=f"projects/-/serviceAccounts/{sa.email}").unique_id == sa.unique_id
    with pytest.raises(gexc.PermissionDenied):  # the wildcard answers 403, not 404, for an unknown account
        gcp.iam.get_service_account(name=f"projects/-/serviceAccounts/nobody@{PROJECT}.iam.gserviceaccount.com")
    assert [a.email for a in gcp.iam.list_service_accounts(name=f"projects/{PROJECT}")] == [sa.email]


def test_a_stale_etag_is_aborted_and_nobody_elses_binding_is_lost(gcp):
    resource = f"projects/{PROJECT}"
    first = gcp.rm.get_iam_policy(request={"resource": resource})
    assert {b.role for b in first.bindings} == {"roles/owner", "roles/container.serviceAgent"}  # a real project's
    add_binding(gcp.rm.get_iam_policy, gcp.rm.set_iam_policy, resource, "roles/viewer", "user:someone@example.com")
    first.bindings.add(role="roles/editor", members=["user:late@example.com"])
    with pytest.raises(gexc.Conflict, match="concurrent policy changes"):
        gcp.rm.set_iam_policy(request={"resource": resource, "policy": first})
    roles = {b.role for b in gcp.rm.get_iam_policy(request={"resource": resource}).bindings}
    assert "roles/viewer" in roles and "roles/editor" not in roles


def test_members_must_exist_and_workload_identity_needs_a_cluster_with_its_pool(gcp):
    with pytest.raises(gexc.BadRequest, match="Service account ghost@gpuplat-test.iam.gserviceaccount.com does not"):
        add_binding(gcp.rm.get_iam_policy, gcp.rm.set_iam_policy, f"projects/{PROJECT}", "roles/viewer",
                    f"serviceAccount:ghost@{PROJECT}.iam.gserviceaccount.com")
    gcp.iam.create_service_account(name=f"projects/{PROJECT}", account_id="external-secrets")
    resource = f"projects/{PROJECT}/serviceAccounts/{ESO_SA}"
    with pytest.raises(gexc.InvalidArgument, match=rf"Identity Pool does not exist \({POOL}\)"):
        add_binding(gcp.iam.get_iam_policy, gcp.iam.set_iam_policy, resource, "roles/iam.workloadIdentityUser", KSA_MEMBER)
    create_cluster(gcp)
    policy = add_binding(gcp.iam.get_iam_policy, gcp.iam.set_iam_policy, resource, "roles/iam.workloadIdentityUser",
                         KSA_MEMBER)
    assert [list(b.members) for b in policy.bindings] == [[KSA_MEMBER]]


def test_node_pools_refuse_a_missing_service_account_and_the_raw_api_adds_no_storage_scope(gcp):
    create_cluster(gcp)
    sa = f"gke-ai-dev-nodes@{PROJECT}.iam.gserviceaccount.com"
    pool = container_v1.NodePool(name="cpu", initial_node_count=1,
                                 config=container_v1.NodeConfig(machine_type="e2-standard-4", service_account=sa))
    with pytest.raises(gexc.BadRequest, match=f'Service account "{sa}" does not exist.'):
        gcp.gke.create_node_pool(parent=f"{PARENT}/clusters/ai-dev", node_pool=pool)
    default = gcp.gke.get_cluster(name=f"{PARENT}/clusters/ai-dev").node_pools[0].config
    assert default.service_account == "default"
    assert "https://www.googleapis.com/auth/devstorage.read_only" not in default.oauth_scopes


def test_artifact_registry_creates_a_repository_as_an_operation_once(gcp):
    op = gcp.ar.create_repository(parent=f"projects/{PROJECT}/locations/us-central1", repository_id="models",
                                  repository=artifactregistry_v1.Repository(
                                      format_=artifactregistry_v1.Repository.Format.DOCKER))
    assert not op.done()  # a long-running operation, done at its first poll
    repo = op.result(timeout=30)
    assert repo.name == f"projects/{PROJECT}/locations/us-central1/repositories/models"
    assert repo.format_ == artifactregistry_v1.Repository.Format.DOCKER
    with pytest.raises(gexc.Conflict, match="already exists"):  # REST: api-core maps every 409 to Conflict
        gcp.ar.create_repository(parent=f"projects/{PROJECT}/locations/us-central1", repository_id="models",
                                 repository=artifactregistry_v1.Repository(
                                     format_=artifactregistry_v1.Repository.Format.DOCKER))
    with pytest.raises(gexc.NotFound):
        gcp.ar.get_repository(name=f"projects/{PROJECT}/locations/us-central1/repositories/nope")


def test_an_api_the_project_has_not_enabled_is_403_service_disabled(sandbox):
    iam = iam_admin_v1.IAMClient(transport=IAMGrpcTransport(channel=grpc.insecure_channel(sandbox.urls()["iam_grpc"])))
    with pytest.raises(gexc.PermissionDenied, match="Identity and Access Management \\(IAM\\) API has not been used"):
        iam.list_service_accounts(name="projects/blank-project")
    ar = artifactregistry_v1.ArtifactRegistryClient(**client_options(sandbox.urls(), "artifactregistry"))
    with pytest.raises(gexc.Forbidden) as info:
        ar.list_repositories(parent="projects/blank-project/locations/us-central1")
    assert info.value.reason == "SERVICE_DISABLED"


def keyless_store(sandbox, tmp_path, cluster: str) -> tuple[client.CustomObjectsApi, client.CoreV1Api]:
    """Argo CD and the platform layer (so ESO) on `cluster`, and a gcpsm store with no key: Workload Identity."""
    api = kube_api(sandbox, tmp_path, cluster)
    custom, core = client.CustomObjectsApi(api), client.CoreV1Api(api)
    install_argocd(api)
    custom.create_namespaced_custom_object("argoproj.io", "v1alpha1", "argocd", "applicationsets",
                                           appset("platform", selector=platform_selector()))
    custom.create_cluster_custom_object("external-secrets.io", "v1", "clustersecretstores", {
        "apiVersion": "external-secrets.io/v1", "kind": "ClusterSecretStore", "metadata": {"name": "secret-store"},
        "spec": {"provider": {"gcpsm": {"projectID": PROJECT}}}})
    return custom, core


def store_ready(custom) -> tuple[str, str]:
    store = custom.get_cluster_custom_object("external-secrets.io", "v1", "clustersecretstores", "secret-store")
    ready = next(c for c in store["status"]["conditions"] if c["type"] == "Ready")
    return ready["status"], ready["message"]


def test_eso_is_ready_only_when_the_workload_identity_chain_is_complete(sandbox, gcp, tmp_path):
    create_cluster(gcp)
    custom, core = keyless_store(sandbox, tmp_path, f"{PARENT}/clusters/ai-dev")
    assert store_ready(custom) == ("False", "unable to validate store: ServiceAccount external-secrets/external-secrets "
                                            "has no iam.gke.io/gcp-service-account annotation")
    core.patch_namespaced_service_account("external-secrets", "external-secrets", {
        "metadata": {"annotations": {"iam.gke.io/gcp-service-account": ESO_SA}}})
    assert store_ready(custom)[1].endswith(f"Google service account {ESO_SA} does not exist")
    gcp.iam.create_service_account(name=f"projects/{PROJECT}", account_id="external-secrets")
    assert "roles/iam.workloadIdentityUser is missing" in store_ready(custom)[1]
    add_binding(gcp.iam.get_iam_policy, gcp.iam.set_iam_policy, f"projects/{PROJECT}/serviceAccounts/{ESO_SA}",
                "roles/iam.workloadIdentityUser", KSA_MEMBER)
    assert store_ready(custom)[1].endswith(f"has no roles/secretmanager.secretAccessor in project {PROJECT}")
    add_binding(gcp.rm.get_iam_policy, gcp.rm.set_iam_policy, f"projects/{PROJECT}",
                "roles/secretmanager.secretAccessor", f"serviceAccount:{ESO_SA}")
    assert store_ready(custom) == ("True", "store validated")


def test_off_gke_a_keyless_gcpsm_store_is_never_ready(sandbox, tmp_path):
    custom, _ = keyless_store(sandbox, tmp_path, "byo-gpu")
    status, message = store_ready(custom)
    assert status == "False" and "needs a GKE cluster with Workload Identity" in message


def test_a_stopped_sandbox_leaves_no_grpc_thread_behind(tmp_path):
    """A test session starts hundreds of sandboxes in one process: each must take its threads with it."""
    import threading
    import time

    from sandbox.app import Sandbox
    from tests.conftest import EPHEMERAL

    sb = Sandbox(tmp_path / "state", ports=EPHEMERAL)
    sb.start()
    channel = grpc.insecure_channel(sb.urls()["iam_grpc"])
    iam = iam_admin_v1.IAMClient(transport=IAMGrpcTransport(channel=channel))
    with pytest.raises(gexc.PermissionDenied):
        iam.list_service_accounts(name="projects/blank-project")
    ours = [t for t in threading.enumerate() if t.name.startswith("sandbox-iam-grpc")]
    assert ours  # the call was served by the server's executor
    channel.close()
    sb.stop()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(t.is_alive() for t in ours):
        time.sleep(0.05)
    assert not [t.name for t in ours if t.is_alive()]
