"""The GKE path end to end on the sandbox, through the official clients, with a real DagsterInstance."""

from __future__ import annotations

import json

import pytest

ALL_IN_SYNC = {"apis_enabled", "service_accounts", "cluster", "workload_identity", "gpu_pool", "model_registry",
               "secrets_seeded", "gpu_stack", "storage_class", "snapshot_class", "platform_installed", "argocd"}


def test_materializing_everything_twice_makes_zero_mutating_calls_the_second_time(gp):
    first = gp.materialize()
    assert first.success
    assert all(gp.checks(first).values()), gp.checks(first)
    gp.admin.reset()
    second = gp.materialize()
    assert second.success
    calls = gp.admin.calls()
    assert calls["_total"]["mutate"] == 0, json.dumps(calls, indent=1)
    checks = gp.checks(second)
    assert {a for (a, c), ok in checks.items() if c == "in_sync" and ok} == ALL_IN_SYNC
    assert all(checks.values()), checks


def test_drift_injected_fails_in_sync_with_the_right_plan_and_materializing_fixes_it(gp):
    assert gp.materialize().success
    gp.admin.call("POST", "/sandbox/gke/drift/node-pool", {
        "cluster": "projects/gpuplat-test/locations/us-central1-a/clusters/ai-dev", "nodePool": "gpu-l4",
        "patch": {"autoscaling": {"minNodeCount": 1}}})
    # The drift_checks job runs the checks alone: it changes nothing and names the drift.
    gp.admin.reset()
    checks_only = gp.drift_checks()
    assert gp.admin.calls()["_total"]["mutate"] == 0
    in_sync = next(e for e in checks_only.get_asset_check_evaluations()
                   if (e.asset_key.path[-1], e.check_name) == ("gpu_pool", "in_sync"))
    assert not in_sync.passed and in_sync.partition == "sandbox"
    plan = in_sync.metadata["plan"].value
    assert "| update | node pool gpu-l4 | autoscaling |" in plan and '"min": 1' in plan and '"min": 0' in plan
    # Materializing gpu_pool re-asserts min 0; the plan it executed is the same one.
    fixed = gp.materialize(select=["gpu_pool"])
    assert fixed.asset_materializations_for_node("gpu_pool")[0].metadata["plan"].value == plan
    assert gp.checks(fixed)[("gpu_pool", "in_sync")]
    assert all(gp.checks(gp.drift_checks()).values())


def test_fields_gke_and_the_autoscaler_own_are_never_drift(gp):
    assert gp.materialize().success
    cluster = "projects/gpuplat-test/locations/us-central1-a/clusters/ai-dev"
    gp.admin.call("POST", "/sandbox/gke/upgrade", {"cluster": cluster, "version": "1.34.1-gke.1200"})
    gp.admin.call("POST", "/sandbox/gke/drift/node-pool", {"cluster": cluster, "nodePool": "gpu-l4",
                  "patch": {"config": {"labels": {"cloud.google.com/gke-accelerator": "nvidia-l4"}}}})
    gp.admin.reset()
    result = gp.materialize()
    assert result.success
    assert gp.admin.calls()["_total"]["mutate"] == 0
    in_sync = {a: ok for (a, c), ok in gp.checks(result).items() if c == "in_sync"}
    assert len(in_sync) == 12 and all(in_sync.values()), in_sync


def test_missing_approval_fails_clearly_and_creates_nothing(gp):
    gp.configure(substrate={"kind": "gke", "sandbox": True, "require_approval": True})
    gp.admin.reset()
    result = gp.materialize(select=["apis_enabled", "service_accounts", "cluster"], raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    text = failure.event_specific_data.error.message
    assert "approval needed for cluster" in text and "GPUPLAT_AUTO_APPROVE=1" in text and "gpuplat/approve=true" in text
    methods = gp.admin.calls().get("container", {}).get("methods", {})
    assert "CreateCluster" not in methods


def test_approval_by_run_tag_creates_the_cluster(gp):
    gp.configure(substrate={"kind": "gke", "sandbox": True, "require_approval": True})
    result = gp.materialize(select=["apis_enabled", "service_accounts", "cluster"], tags={"gpuplat/approve": "true"})
    assert result.success
    assert gp.admin.calls()["container"]["methods"].get("CreateCluster") == 1
    meta = result.asset_materializations_for_node("cluster")[0].metadata
    assert meta["approval"].value == "run tag gpuplat/approve=true"


def test_gpu_quota_too_small_fails_before_any_create(gp):
    gp.admin.call("PUT", "/sandbox/quotas", {"project": "gpuplat-test", "metric": "GPUS_ALL_REGIONS", "limit": 0})
    assert gp.materialize(select=["apis_enabled", "service_accounts", "cluster"]).success
    result = gp.materialize(select=["gpu_pool"], raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "GPUS_ALL_REGIONS in global: needs 1, 0 available" in failure.event_specific_data.error.message
    assert "CreateNodePool" not in gp.admin.calls()["container"]["methods"]


def test_a_stockout_names_the_fallback_knobs(gp):
    assert gp.materialize(select=["apis_enabled", "service_accounts", "cluster"]).success
    gp.admin.fault("container", "CreateNodePool", "stockout")
    result = gp.materialize(select=["gpu_pool"], raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    message = failure.event_specific_data.error.message
    assert "stockout" in message and "substrate.gpu_pool.machine_type" in message and "nvidia-tesla-t4" in message


def test_503_storms_are_survived(gp):
    for api, method in (("container", "GetCluster"), ("serviceusage", "*"), ("secretmanager", "*"),
                        ("kubernetes", "list:*")):
        gp.admin.fault(api, method, "503", count=3)
    gp.admin.fault("container", "*", "429", count=2)
    assert gp.materialize().success
    # Every injected fault was served (the sandbox lists only the rules with faults left to serve).
    assert gp.admin.call("GET", "/sandbox/faults")["faults"] == []


def test_service_usage_off_names_the_bootstrap_command(gp):
    gp.admin.call("POST", "/sandbox/projects", {"project": "gpuplat-test", "enabled": []})
    result = gp.materialize(select=["apis_enabled"], raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert ("gcloud services enable serviceusage.googleapis.com cloudresourcemanager.googleapis.com --project "
            "gpuplat-test") in failure.event_specific_data.error.message


def test_a_poisoned_home_kubeconfig_and_kubeconfig_variable_change_nothing(gp, tmp_path, monkeypatch):
    poison = tmp_path / "poison.kubeconfig"
    poison.write_text("apiVersion: v1\nkind: Config\nclusters:\n- name: x\n  cluster: {server: 'http://127.0.0.1:1'}\n"
                      "contexts:\n- name: x\n  context: {cluster: x, user: x}\ncurrent-context: x\nusers:\n- name: x\n  user: {}\n")
    home = tmp_path / "home"
    (home / ".kube").mkdir(parents=True)
    (home / ".kube" / "config").write_text(poison.read_text())
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("KUBECONFIG", str(poison))
    result = gp.materialize()
    assert result.success
    target = result.asset_materializations_for_node("storage_class")[0].metadata["kube_target"].value
    assert "127.0.0.1:1" not in target and "gke_gpuplat-test_us-central1-a_ai-dev" in target


def test_no_secret_value_appears_in_events_logs_or_stdout(gp, capfd):
    result = gp.materialize()
    assert result.success
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import secretmanager_v1

    client = secretmanager_v1.SecretManagerServiceClient(
        transport="rest", credentials=AnonymousCredentials(),
        client_options=ClientOptions(api_endpoint=gp.sandbox.urls()["secretmanager"]))
    values = []
    for secret in client.list_secrets(parent="projects/gpuplat-test"):
        values.append(client.access_secret_version(name=f"{secret.name}/versions/latest").payload.data.decode())
    assert len(values) >= 13
    out, err = capfd.readouterr()
    runs = gp.instance.get_runs()
    haystack = out + err + "\n".join(str(e) for r in runs for e in gp.instance.all_logs(r.run_id))
    assert "litellm-master-key" in haystack  # names are recorded; values are not
    for value in values:
        assert value not in haystack
        assert value[:16] not in haystack


@pytest.mark.parametrize("profile", ["prod"])
def test_prod_creates_the_default_snapshot_class(gp, profile):
    gp.configure(profile=profile)
    result = gp.materialize()
    assert result.success, [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert gp.checks(result)[("snapshot_class", "default_snapshot_class")]
    observed = result.asset_materializations_for_node("snapshot_class")[0].metadata["observed"].value
    assert observed["defaults"] == ["gke-pd-snapshotclass"]


def test_an_interrupted_materialization_waits_for_the_operation_in_flight_and_adopts_the_cluster(gp):
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import container_v1

    from substrate.cluster import desired_cluster
    from substrate.environments import load_environment
    from resources.google import _pool_message

    assert gp.materialize(select=["apis_enabled", "service_accounts"]).success
    # A previous run asked GKE for the cluster and died before the operation finished.
    spec = desired_cluster(load_environment("sandbox"))
    gke = container_v1.ClusterManagerClient(transport="rest", credentials=AnonymousCredentials(),
                                            client_options=ClientOptions(api_endpoint=gp.sandbox.urls()["container"]))
    op = gke.create_cluster(parent="projects/gpuplat-test/locations/us-central1-a", cluster=container_v1.Cluster(
        name=spec.name, node_pools=[_pool_message(spec.cpu_pool)],
        workload_identity_config=container_v1.WorkloadIdentityConfig(workload_pool=spec.workload_pool),
        ip_allocation_policy=container_v1.IPAllocationPolicy(use_ip_aliases=True),
        network_config=container_v1.NetworkConfig(datapath_provider=container_v1.DatapathProvider.ADVANCED_DATAPATH)))
    assert op.status != container_v1.Operation.Status.DONE
    result = gp.materialize(select=["cluster"])
    assert result.success
    methods = gp.admin.calls()["container"]["methods"]
    assert methods["CreateCluster"] == 1 and methods.get("GetOperation", 0) >= 1
    plan = result.asset_materializations_for_node("cluster")[0].metadata["plan"].value
    assert "| wait | GKE cluster ai-dev | status |" in plan
    assert gp.checks(result)[("cluster", "in_sync")]


def test_a_broken_environment_fails_with_its_config_message_and_the_healthy_one_still_materializes(gp):
    gp.write("broken",
             "cluster: {name: ai-dev, projectID: p}\nsubstrate: {kind: gke, sandbox: true, gpu_pool: {min: 3, max: 1}}\n")
    broken = gp.materialize(select=["apis_enabled"], env="broken", raise_on_error=False)
    assert not broken.success
    failure = next(e for e in broken.all_events if e.event_type_value == "STEP_FAILURE")
    message = failure.event_specific_data.error.message
    assert "broken/config.yaml: substrate.gpu_pool.min: 3 is not allowed; allowed: 0 <= min <= max (max is 1)" in message
    assert gp.admin.calls()["_total"] == {"read": 0, "mutate": 0}  # bad config never reaches an API
    assert gp.materialize(select=["apis_enabled"]).success
