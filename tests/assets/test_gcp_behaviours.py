"""Behaviours of real GCP that only a real project shows, reproduced by the sandbox and met through the
official clients. Each test cites the public source of the behaviour the sandbox reproduces; none of
them reaches Google."""

from __future__ import annotations

import pytest
from google.cloud import container_v1
from kubernetes import client

from tests.conftest import admin, client_options, kube_api

PROJECT = "gpuplat-test"
LOCATION = "us-central1-a"
CLUSTER = f"projects/{PROJECT}/locations/{LOCATION}/clusters/ai-dev"
SUBSTRATE = ["apis_enabled", "service_accounts", "cluster"]


def failure(result) -> str:
    return "\n".join(e.event_specific_data.error.message for e in result.all_events
                     if e.event_type_value == "STEP_FAILURE")


def check(result, asset: str, name: str):
    return next(e for e in result.get_asset_check_evaluations() if (e.asset_key.path[-1], e.check_name) == (asset, name))


def test_gke_s_size_and_image_named_device_plugin_daemonsets_satisfy_gpu_stack(gp, tmp_path):
    """GKE runs the NVIDIA device plugin as six DaemonSets, nvidia-gpu-device-plugin-{small,medium,large}-
    {cos,ubuntu}, none named plain nvidia-gpu-device-plugin (rapidsai/deployment#572: pods went from
    nvidia-gpu-device-plugin-xxxxx to nvidia-gpu-device-plugin-medium-cos-h5kkz)."""
    result = gp.materialize()
    assert result.success
    apps = client.AppsV1Api(kube_api(gp.admin.urls, tmp_path, CLUSTER))
    names = {ds.metadata.name for ds in apps.list_namespaced_daemon_set("kube-system").items}
    plugins = {n for n in names if n.startswith("nvidia-gpu-device-plugin")}
    assert "nvidia-gpu-device-plugin" not in plugins and plugins  # the precondition: GKE's names, as the sandbox serves them
    consistent = check(result, "gpu_stack", "gpu_stack_consistent")
    assert consistent.passed and "device plugin present" in consistent.description
    # gpuplat found them by GKE's names: without them the check fails.
    for name in plugins:
        apps.delete_namespaced_daemon_set(name, "kube-system")
    gone = next(e for e in gp.drift_checks(raise_on_error=False).get_asset_check_evaluations()
                if e.check_name == "gpu_stack_consistent")
    assert not gone.passed and "device plugin absent" in gone.description


def test_a_stockout_appears_at_scale_up_and_fails_gpu_capacity_available_until_the_pod_gets_its_node(gp, tmp_path):
    """A min-0 pool creates no VM, so the stockout meets the autoscaler's first scale-up: the pending pod
    gets `FailedScaleUp ... Node scale up in zones us-central1-a associated with this pod failed: GCE out of
    resources. Pod is at risk of not being scheduled.` (GKE cluster-autoscaler visibility docs, messageId
    scale.up.error.out.of.resources) and the pool a GCE_STOCKOUT StatusCondition (container v1
    cluster_service.proto, StatusCondition.Code). The remedy is the seed's T4 fallback."""
    assert gp.materialize().success
    admin(gp.admin.urls, "POST", "/sandbox/gke/stockouts", {"zone": LOCATION, "acceleratorType": "nvidia-l4"})
    pod = admin(gp.admin.urls, "POST", "/sandbox/workloads/gpu", {"cluster": CLUSTER, "name": "llm", "gpus": 1})["pod"]
    core = client.CoreV1Api(kube_api(gp.admin.urls, tmp_path, CLUSTER))
    core.list_pod_for_all_namespaces()  # the autoscaler's pass
    checks = gp.drift_checks(raise_on_error=False)
    capacity = check(checks, "gpu_pool", "gpu_capacity_available")
    assert not capacity.passed
    assert "GCE out of resources" in capacity.description or "GCE_STOCKOUT" in capacity.description
    assert "GCE_STOCKOUT" in capacity.metadata["pool_conditions"].value
    assert "nvidia-tesla-t4" in capacity.metadata["remedy"].value and "n1-standard-4" in capacity.metadata["remedy"].value
    admin(gp.admin.urls, "DELETE", "/sandbox/gke/stockouts")
    core.list_pod_for_all_namespaces()  # the autoscaler retries; the pod gets its node
    assert core.read_namespaced_pod(pod, "default").status.phase == "Running"
    assert check(gp.drift_checks(), "gpu_pool", "gpu_capacity_available").passed


def test_a_pool_whose_creation_failed_stays_in_error_and_gpuplat_names_a_remedy_that_works(gp):
    """GKE leaves a node pool whose creation failed in ERROR ("may be unusable. Details can be found in the
    statusMessage field", container v1 NodePool.Status) rather than deleting it; gpuplat neither retries the
    paid create nor says "materialize gpu_pool" for a state a run cannot fix."""
    gp.configure(substrate={"kind": "gke", "sandbox": True, "external_secrets": [],
                            "gpu_pool": {"min": 1, "max": 1}})
    assert gp.materialize(select=SUBSTRATE).success
    gp.admin.fault("container", "CreateNodePool", "stockout")
    first = gp.materialize(select=["gpu_pool"], raise_on_error=False)
    assert not first.success and "nvidia-tesla-t4" in failure(first)
    gke = container_v1.ClusterManagerClient(**client_options(gp.admin.urls, "container"))
    pool = gke.get_node_pool(name=f"{CLUSTER}/nodePools/gpu-l4")
    assert pool.status == container_v1.NodePool.Status.ERROR and "ZONE_RESOURCE_POOL_EXHAUSTED" in pool.status_message
    gp.admin.reset()
    again = gp.materialize(select=["gpu_pool"], raise_on_error=False)
    assert not again.success and "CreateNodePool" not in gp.admin.calls()["container"]["methods"]
    message = failure(again)
    assert "ERROR: " in message and "ZONE_RESOURCE_POOL_EXHAUSTED" in message
    assert f"gcloud container node-pools delete gpu-l4 --cluster ai-dev --location {LOCATION}" in message
    assert "materialize gpu_pool to create it again" in message


def test_a_create_over_quota_is_refused_at_once_and_named_a_quota_problem_not_a_role(gp):
    """GKE refuses a create over quota synchronously: 403 PERMISSION_DENIED "Insufficient regional quota to
    satisfy request: resource "CPUS": request requires '4.0' and is short '4.0'. ..."
    (GoogleCloudPlatform/cloud-ops-sandbox#44, google/caliban#66). That is a quota to raise, not an IAM role."""
    admin(gp.admin.urls, "PUT", "/sandbox/quotas", {"project": PROJECT, "region": "us-central1", "metric": "CPUS",
                                                   "limit": 0})
    result = gp.materialize(select=SUBSTRATE, raise_on_error=False)
    assert not result.success
    message = failure(result)
    assert 'Insufficient regional quota to satisfy request: resource "CPUS"' in message
    assert "IAM & Admin > Quotas" in message and "IAM roles" not in message


def test_a_gpu_whose_quota_compute_does_not_report_is_a_warning_not_a_limit_of_zero(gp):
    """Compute lists only the quota metrics a project has (compute/v1 Quota.Metric; newer GPU metrics such as
    NVIDIA_A100_80GB_GPUS are absent until granted): an unreported metric is unknown, never 0 for ever."""
    gp.configure(substrate={"kind": "gke", "sandbox": True, "external_secrets": [],
                            "gpu_pool": {"name": "gpu-a100", "machine_type": "a2-ultragpu-1g",
                                         "accelerator_type": "nvidia-a100-80gb"}})
    assert gp.materialize(select=SUBSTRATE).success
    quota = check(gp.drift_checks(raise_on_error=False), "gpu_pool", "gpu_quota_sufficient")
    assert quota.passed and "NVIDIA_A100_80GB_GPUS unknown" in quota.description
    assert "cannot check NVIDIA_A100_80GB_GPUS" in quota.metadata["warning"].value
    assert gp.materialize(select=["gpu_pool"]).success
    assert gp.admin.calls()["container"]["methods"].get("CreateNodePool") == 1


def test_an_api_enabled_a_moment_ago_is_retried_while_it_propagates(gp):
    """"If you enabled this API recently, wait a few minutes for the action to propagate to our systems and
    retry." (the SERVICE_DISABLED error's own text, google-gemini/gemini-cli#1343): right after gpuplat enables
    Secret Manager the first calls still answer 403 SERVICE_DISABLED; gpuplat retries them."""
    admin(gp.admin.urls, "POST", "/sandbox/projects", {"project": PROJECT, "propagation": 3})
    result = gp.materialize(select=["apis_enabled", "secrets_seeded"])
    assert result.success and check(result, "secrets_seeded", "internal_secrets_present").passed


def test_an_api_nobody_enabled_names_the_service_and_the_command(gp):
    """Every Google API answers a project that has not enabled it with 403 SERVICE_DISABLED, ErrorInfo
    metadata.service naming it (google-gemini/gemini-cli#1343): gpuplat names that service and the fix."""
    admin(gp.admin.urls, "POST", "/sandbox/projects", {"project": PROJECT, "enabled": [
        "serviceusage.googleapis.com", "cloudresourcemanager.googleapis.com"]})
    result = gp.materialize(select=["secrets_seeded"], raise_on_error=False)
    assert not result.success
    assert ("secretmanager.googleapis.com is not enabled in project gpuplat-test: gcloud services enable "
            "secretmanager.googleapis.com --project gpuplat-test (apis_enabled enables") in failure(result)


def test_a_project_without_billing_says_to_link_a_billing_account(gp):
    """Service Usage refuses paid services in a project without billing: 400 FAILED_PRECONDITION "Billing
    account for project '...' is not found. Billing must be enabled for activation of service(s) ..."
    (GoogleCloudPlatform/deploystack#52). Nothing is enabled in part."""
    admin(gp.admin.urls, "POST", "/sandbox/projects", {"project": PROJECT, "billing": False, "enabled": [
        "serviceusage.googleapis.com", "cloudresourcemanager.googleapis.com"]})
    result = gp.materialize(select=["apis_enabled"], raise_on_error=False)
    assert not result.success
    assert "billing is not enabled for project" in failure(result) and "gcloud billing projects link" in failure(result)
    project = next(p for p in admin(gp.admin.urls, "GET", "/sandbox/projects")["projects"] if p["id"] == PROJECT)
    assert sorted(project["enabled"]) == ["cloudresourcemanager.googleapis.com", "serviceusage.googleapis.com"]


@pytest.mark.parametrize("status, words", [("ERROR", "automatically deleted"), ("DEGRADED", "user action")])
def test_a_cluster_in_error_or_degraded_fails_in_sync_with_its_message_and_no_materialize_cluster(gp, status, words):
    """Cluster.Status ERROR "indicates the cluster is unusable. It will be automatically deleted." and DEGRADED
    "requires user action to restore full functionality" (container v1 cluster_service.proto); a run can fix
    neither, so the remedy is never "materialize cluster"."""
    assert gp.materialize(select=SUBSTRATE).success
    admin(gp.admin.urls, "POST", "/sandbox/gke/drift/cluster", {
        "cluster": CLUSTER, "patch": {"status": status, "statusMessage": f"the cluster {words} (sandbox)"}})
    checks = gp.drift_checks(raise_on_error=False)
    in_sync = check(checks, "cluster", "in_sync")
    assert not in_sync.passed and f"{status}: the cluster {words}" in in_sync.metadata["plan"].value
    assert "| cannot-fix |" in in_sync.metadata["plan"].value


def test_a_degraded_cluster_whose_condition_has_only_a_canonical_code_is_read_and_named(gp):
    """StatusCondition.code is "Deprecated. Use canonical_code instead." (container v1 cluster_service.proto):
    a condition may carry only `canonicalCode`, a google.rpc.Code, which the client hands back as a bare
    number. gpuplat names it (it used to fail reading the cluster at all) and shows it as the reason."""
    assert gp.materialize(select=SUBSTRATE).success
    admin(gp.admin.urls, "POST", "/sandbox/gke/drift/cluster", {"cluster": CLUSTER, "patch": {
        "status": "DEGRADED", "conditions": [{"canonicalCode": "RESOURCE_EXHAUSTED",
                                              "message": "the master is short of capacity (sandbox)"}]}})
    in_sync = check(gp.drift_checks(raise_on_error=False), "cluster", "in_sync")
    assert not in_sync.passed
    assert "DEGRADED: RESOURCE_EXHAUSTED: the master is short of capacity (sandbox)" in in_sync.metadata["plan"].value


def test_a_cold_catalog_answers_loading_at_once_and_a_later_tick_gets_the_city_named_price(sandbox):
    """A sensor tick must end well inside Dagster's 60 s evaluation timeout (Dagster docs, "Sensors":
    DAGSTER_SENSOR_GRPC_TIMEOUT_SECONDS, 60 by default), while the real catalog takes seconds to page
    through Compute Engine's SKUs: the catalog is read in the background and a cold one says "loading".
    The catalog is project-less; the caller's quota project needs cloudbilling.googleapis.com."""
    import time

    from substrate.prices import Catalog, price_from_catalog
    from resources.google import Google

    admin(sandbox, "POST", "/sandbox/projects", {"project": PROJECT, "enabled": ["cloudbilling.googleapis.com"]})
    admin(sandbox, "POST", "/sandbox/faults", {"api": "billing", "method": "ListSkus", "kind": "slow", "count": 1})
    google, catalog = Google(PROJECT, endpoints=sandbox.urls()), Catalog()
    started = time.monotonic()
    assert catalog.prices(google, "us-central1", wait=0.5) is None
    assert time.monotonic() - started < 2
    skus = catalog.prices(google, "us-central1", wait=10)
    assert skus is not None
    price = price_from_catalog(skus, "us-central1", "g2-standard-4", "nvidia-l4", 1, 4, 16)
    assert "Nvidia L4 GPU running in Iowa" in price.source and "Virginia" not in price.source
    admin(sandbox, "POST", "/sandbox/calls/reset")
    assert catalog.prices(google, "us-central1", wait=0) == skus  # warm: no call at all
    assert admin(sandbox, "GET", "/sandbox/calls")["_total"]["read"] == 0
