"""Bring-your-own and Hetzner on the sandbox: verified clusters, the GPU Operator after a preflight."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from kubernetes import client, config

from tests.conftest import kube_api as sandbox_kube_api

ROOT = Path(__file__).resolve().parents[2]


def use_shipped(gp, shipped: str, name: str, **substrate) -> dict:
    cfg = yaml.safe_load((ROOT / "environments" / shipped / "config.yaml").read_text())
    cfg["substrate"].pop("platform_repo")  # the test platform checkout holds the test environments
    cfg["substrate"].update(substrate)
    gp.write(name, cfg)
    return cfg


def failure_message(result) -> str:
    return "\n".join(e.event_specific_data.error.message for e in result.all_events
                     if e.event_type_value == "STEP_FAILURE")


def kube_api(gp, env: str):
    return config.new_client_from_config(config_file=str(gp.tmp_path / "kube" / f"{env}.kubeconfig"),
                                         persist_config=False)


def test_bring_your_own_materializes_and_a_second_run_makes_zero_mutating_calls(gp, fast_clock):
    use_shipped(gp, "sandbox-byo", "byo")
    first = gp.materialize(env="byo", raise_on_error=False)
    assert first.success, failure_message(first)
    checks = gp.checks(first)
    # Off GKE, Secret Manager is read with a service-account key that only the user can provide.
    assert {k for k, v in checks.items() if not v} == {("platform_installed", "secret_store_ready")}
    store_check = next(e for e in first.get_asset_check_evaluations() if e.check_name == "secret_store_ready")
    assert "create secret generic secret-store-key" in store_check.metadata["remedy"].value
    core = client.CoreV1Api(kube_api(gp, "byo"))
    if "external-secrets" not in {n.metadata.name for n in core.list_namespace().items}:
        core.create_namespace({"metadata": {"name": "external-secrets"}})
    core.create_namespaced_secret("external-secrets", {"metadata": {"name": "secret-store-key"},
                                                       "stringData": {"sa-key.json": '{"type": "service_account"}'}})
    assert gp.checks(gp.materialize(select=["platform_installed"], env="byo"))[("platform_installed",
                                                                               "secret_store_ready")]
    apis = first.asset_materializations_for_node("apis_enabled")[0].metadata["observed"].value
    # Off GKE, only Secret Manager's API is Google's (this environment keeps its secrets there).
    assert apis == {"applies": True, "enabled": ["secretmanager.googleapis.com"], "service_usage_disabled": False}
    # The H100 has a preinstalled driver: the operator runs with its driver component off.
    app = client.CustomObjectsApi(kube_api(gp, "byo")).get_namespaced_custom_object(
        "argoproj.io", "v1alpha1", "argocd", "applications", "nvidia-gpu-operator")
    values = app["spec"]["source"]["helm"]["valuesObject"]
    assert values["driver"] == {"enabled": False} and values["dcgmExporter"]["serviceMonitor"] == {"enabled": True}
    assert app["spec"]["source"]["targetRevision"] == "v26.3.3"
    assert "ServerSideApply=true" in app["spec"]["syncPolicy"]["syncOptions"]
    gp.admin.reset()
    second = gp.materialize(env="byo")
    assert second.success and gp.admin.calls()["_total"]["mutate"] == 0


def test_hetzner_reduces_two_default_storage_classes_to_one_and_rematerializes_with_zero_mutations(gp, fast_clock):
    use_shipped(gp, "sandbox-hetzner", "hetzner")
    before = client.StorageV1Api(sandbox_kube_api(gp.admin.urls, gp.tmp_path, "hetzner-gpu")).list_storage_class().items
    assert sorted(sc.metadata.name for sc in before
                  if (sc.metadata.annotations or {}).get("storageclass.kubernetes.io/is-default-class") == "true") == \
        ["hcloud-volumes", "local-path"]
    result = gp.materialize(env="hetzner", raise_on_error=False)
    # The Ada GEX44 has no driver and headers present: the operator installs the driver.
    assert result.success, failure_message(result)
    after = client.StorageV1Api(kube_api(gp, "hetzner")).list_storage_class().items
    assert [sc.metadata.name for sc in after
            if (sc.metadata.annotations or {}).get("storageclass.kubernetes.io/is-default-class") == "true"] == \
        ["hcloud-volumes"]
    checks = gp.checks(result)
    assert checks[("cluster", "kube_target_reachable")] and checks[("snapshot_class", "default_snapshot_class")]
    assert checks[("gpu_stack", "gpu_node_preflight")] and checks[("gpu_stack", "gpu_stack_consistent")]
    # Vault is not gpuplat's to write: the keys are reported, and the check waits for ESO.
    assert checks[("secrets_seeded", "eso_secrets_materialized")] is False
    gp.admin.reset()
    again = gp.materialize(env="hetzner", raise_on_error=False)
    assert again.success, failure_message(again)
    assert gp.admin.calls()["_total"]["mutate"] == 0


def test_an_edited_secret_store_provider_block_survives_a_rematerialization(gp, fast_clock):
    use_shipped(gp, "sandbox-hetzner", "hetzner")
    first = gp.materialize(env="hetzner", raise_on_error=False)
    assert first.success, failure_message(first)
    api = client.CustomObjectsApi(kube_api(gp, "hetzner"))
    store = api.get_cluster_custom_object("external-secrets.io", "v1", "clustersecretstores", "secret-store")
    assert store["spec"]["provider"] == {}
    vault = {"vault": {"server": "https://vault.example:8200", "path": "platform", "version": "v2",
                       "auth": {"kubernetes": {"mountPath": "kubernetes", "role": "eso"}}}}
    api.patch_cluster_custom_object("external-secrets.io", "v1", "clustersecretstores", "secret-store",
                                    {"spec": {"provider": vault}})
    result = gp.materialize(select=["platform_installed"], env="hetzner")
    assert result.success
    store = api.get_cluster_custom_object("external-secrets.io", "v1", "clustersecretstores", "secret-store")
    assert store["spec"]["provider"] == vault
    assert gp.checks(result)[("platform_installed", "in_sync")]


@pytest.mark.parametrize("profile, verdict_text", [
    pytest.param({"kernel": {"headers": False}}, "linux-headers-6.8.0-57-generic",
                 id="no driver and missing headers fail naming the package"),
    pytest.param({"secureBoot": "enabled"}, "Secure Boot", id="an Ada GPU with Secure Boot on fails"),
])
def test_preflight_failures_stop_the_operator_and_name_the_remedy(gp, profile, verdict_text):
    use_shipped(gp, "sandbox-hetzner", "hetzner")
    gp.admin.call("PUT", "/sandbox/kube/hetzner-gpu/host-profile", {"node": "hz-gex44-1", "profile": profile})
    result = gp.materialize(env="hetzner", raise_on_error=False)
    assert not result.success
    message = failure_message(result)
    assert "GPU node preflight failed" in message and verdict_text in message
    assert "hz-gex44-1" in message


def test_preflight_on_the_h100_notes_unknown_secure_boot_and_turns_the_operator_driver_off(gp, fast_clock):
    use_shipped(gp, "sandbox-byo", "byo")
    result = gp.materialize(select=["apis_enabled", "service_accounts", "cluster", "gpu_pool", "argocd", "gpu_stack"], env="byo")
    evaluation = next(e for e in result.get_asset_check_evaluations() if e.check_name == "gpu_node_preflight")
    assert evaluation.passed
    node = evaluation.metadata["node byo-gpu-h100-1"].value
    assert node["gpu"] == "NVIDIA H100 80GB HBM3 (Hopper, cc 9.0)"
    assert (node["driver"], node["module"], node["headers"], node["secure_boot"]) == ("580.159.04", "open", False,
                                                                                      "unknown")
    assert "secure-boot pass" in node["verdicts"] and "Ada Secure Boot rule does not apply" in node["verdicts"]
    assert "driver pass" in node["verdicts"] and "driver.enabled=false" in node["verdicts"]


def test_a_provider_id_that_contradicts_the_substrate_fails_the_target_check(gp):
    assert gp.materialize(select=["apis_enabled", "service_accounts", "cluster"]).success  # the GKE sandbox env
    gke_kubeconfig = gp.tmp_path / "kube" / "sandbox.kubeconfig"
    use_shipped(gp, "sandbox-hetzner", "hetzner", kubeconfig=str(gke_kubeconfig))
    result = gp.materialize(select=["apis_enabled", "service_accounts", "cluster"], env="hetzner", raise_on_error=False)
    evaluation = next(e for e in result.get_asset_check_evaluations() if e.check_name == "kube_target_reachable")
    assert not evaluation.passed
    assert "gce://" in evaluation.description and "hetzner" in evaluation.description


def test_a_missing_kubeconfig_fails_with_the_exact_remedy(gp, tmp_path):
    use_shipped(gp, "sandbox-hetzner", "hetzner", kubeconfig=str(tmp_path / "nowhere.kubeconfig"), sandbox=False)
    result = gp.materialize(select=["apis_enabled", "service_accounts", "cluster"], env="hetzner", raise_on_error=False)
    assert not result.success
    message = failure_message(result)
    assert "nowhere.kubeconfig" in message and "CLUSTER_KUBECONFIG" in message and "~/.kube/config" in message


def test_the_gpu_operator_is_refused_on_gke_with_the_reason(gp):
    gp.configure(gpu_stack="operator")
    result = gp.materialize(select=["apis_enabled"], raise_on_error=False)
    assert not result.success
    assert "cannot register with GKE's containerd" in failure_message(result)


def test_a_load_balancer_without_an_address_fails_ingress_on_hetzner_naming_the_network_zone(gp, fast_clock):
    cfg = use_shipped(gp, "sandbox-hetzner", "hetzner")
    cfg["domain"] = "llm.example.org"
    gp.write("hetzner", cfg)
    gp.materialize(env="hetzner", raise_on_error=False)
    core = client.CoreV1Api(kube_api(gp, "hetzner"))
    core.create_namespaced_service("default", {"metadata": {"name": "gateway"}, "spec": {
        "type": "LoadBalancer", "ports": [{"port": 443}], "selector": {"app": "gateway"}}})
    result = gp.materialize(select=["platform_installed"], env="hetzner", raise_on_error=False)
    evaluation = next(e for e in result.get_asset_check_evaluations() if e.check_name == "ingress_addresses")
    assert not evaluation.passed and "default/gateway" in evaluation.description
    assert "HCLOUD_LOAD_BALANCERS_NETWORK_ZONE" in evaluation.metadata["remedy"].value
    core.patch_namespaced_service_status("gateway", "default",
                                         {"status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.7"}]}}})
    result = gp.materialize(select=["platform_installed"], env="hetzner", raise_on_error=False)
    assert next(e for e in result.get_asset_check_evaluations() if e.check_name == "ingress_addresses").passed


def test_a_node_fixed_after_a_failed_preflight_is_probed_again(gp, fast_clock):
    use_shipped(gp, "sandbox-hetzner", "hetzner")
    gp.admin.call("PUT", "/sandbox/kube/hetzner-gpu/host-profile", {"node": "hz-gex44-1",
                                                                    "profile": {"secureBoot": "enabled"}})
    assert not gp.materialize(env="hetzner", raise_on_error=False).success
    gp.admin.call("PUT", "/sandbox/kube/hetzner-gpu/host-profile", {"node": "hz-gex44-1",
                                                                    "profile": {"secureBoot": "disabled"}})
    result = gp.materialize(env="hetzner", raise_on_error=False)
    assert result.success, failure_message(result)
    assert gp.checks(result)[("gpu_stack", "gpu_node_preflight")]
