"""The drift sensor, ticked against the sandbox with a real DagsterInstance.

Each drift is made the way a person would make it (the sandbox's admin drift routes: a console
click, a `kubectl edit`), and the sensor must answer with exactly one run of the right asset, or,
where the environment only reports, a failed `in_sync` evaluation and no run.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone

import pytest
from dagster import AssetKey, AssetMaterialization

from gpuplat_assets.assets import PIECES, SENSOR_TAG
from gpuplat_assets.config import load_environment
from gpuplat_assets.secrets_seeded import desired_secrets
from sensors.drift import PLAN_HASH_TAG, TRIGGER, build_drift_sensor

from .conftest import GKE_CLUSTER, KUBE_CLUSTER, Envs, Ticker, evaluations, observations, runs, skip_text

ALL = [p.name for p in PIECES]


def drift_gpu_pool_min(gp) -> None:
    gp.admin.call("POST", "/sandbox/gke/drift/node-pool",
                  {"cluster": GKE_CLUSTER, "nodePool": "gpu-l4", "patch": {"autoscaling": {"minNodeCount": 1}}})


def drift_storage_default(gp) -> None:
    gp.admin.call("POST", f"/sandbox/kube/{KUBE_CLUSTER}/drift", {
        "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "name": "standard-rwo", "action": "annotate",
        "key": "storageclass.kubernetes.io/is-default-class", "value": "false"})


def drift_delete_applicationset(gp) -> None:
    gp.admin.call("POST", f"/sandbox/kube/{KUBE_CLUSTER}/drift", {
        "apiVersion": "argoproj.io/v1alpha1", "kind": "ApplicationSet", "namespace": "argocd",
        "name": "layer-platform", "action": "delete"})


def drift_disable_api(gp) -> None:
    project = next(p for p in gp.admin.call("GET", "/sandbox/projects")["projects"]
                   if p.get("projectId", p.get("project")) == "gpuplat-test" or "gpuplat-test" in json.dumps(p))
    enabled = [s for s in project["enabled"] if s != "iamcredentials.googleapis.com"]
    gp.admin.call("POST", "/sandbox/projects", {"project": "gpuplat-test", "enabled": enabled})


def drift_remove_workload_identity(gp) -> None:
    """`gcloud iam service-accounts remove-iam-policy-binding ... --role roles/iam.workloadIdentityUser`."""
    import grpc
    from google.cloud import iam_admin_v1
    from google.cloud.iam_admin_v1.services.iam.transports import IAMGrpcTransport

    iam = iam_admin_v1.IAMClient(transport=IAMGrpcTransport(channel=grpc.insecure_channel(gp.admin.urls["iam_grpc"])))
    resource = "projects/gpuplat-test/serviceAccounts/external-secrets@gpuplat-test.iam.gserviceaccount.com"
    policy = iam.get_iam_policy(request={"resource": resource})
    del policy.bindings[:]
    iam.set_iam_policy(request={"resource": resource, "policy": policy})


DRIFTS = {
    "gpu pool autoscaling min drifted to 1": (drift_gpu_pool_min, "gpu_pool", "autoscaling"),
    "the default StorageClass annotation flipped": (drift_storage_default, "storage_class",
                                                     "storageclass.kubernetes.io/is-default-class"),
    "an ApplicationSet deleted": (drift_delete_applicationset, "platform_installed", "ApplicationSet layer-platform"),
    "a required API disabled": (drift_disable_api, "apis_enabled", "iamcredentials.googleapis.com"),
    "ESO's Workload Identity binding removed": (drift_remove_workload_identity, "workload_identity",
                                                "roles/iam.workloadIdentityUser"),
}


@pytest.fixture
def fleet(gp, envs):
    """The sandbox environment materialized once, and a drift sensor that sees only it."""
    envs.add("sandbox")
    assert gp.materialize().success
    return Ticker(build_drift_sensor(environments_root=envs.root), gp)


@pytest.mark.parametrize("kind", list(DRIFTS))
def test_each_drift_requests_exactly_one_run_across_two_ticks_and_none_once_fixed(gp, fleet, kind):
    inject, asset, needle = DRIFTS[kind]
    first = fleet.tick()
    assert not runs(first) and not first.asset_events, skip_text(first)
    assert "no new drift" in skip_text(first)

    inject(gp)
    seen = fleet.tick()
    again = fleet.tick()
    requested = runs(seen) + runs(again)
    assert len(requested) == 1, [(r.asset_selection, r.run_key) for r in requested]
    rr = requested[0]
    assert rr.asset_selection == [AssetKey(asset)] and rr.partition_key == "sandbox"
    assert rr.tags[SENSOR_TAG] == TRIGGER
    assert rr.run_key.startswith(f"sandbox:{asset}:{rr.tags[PLAN_HASH_TAG]}:")
    assert {k.name for k in rr.asset_check_keys} >= {"in_sync"}
    obs = observations(seen)
    assert [o.asset_key for o in obs] == [AssetKey(asset)] and obs[0].partition == "sandbox"
    plan = obs[0].metadata["plan"].value
    assert needle in plan, plan
    assert obs[0].metadata["plan_hash"].value == rr.tags[PLAN_HASH_TAG]
    assert "first_seen" in obs[0].metadata
    assert not again.asset_events and "known drift" in skip_text(again)

    # What the requested run does (the sensor's tag: no approval, which the sandbox does not need).
    fixed = gp.materialize(select=[asset], tags=dict(rr.tags))
    assert fixed.success
    assert gp.checks(fixed)[(asset, "in_sync")]
    after = fleet.tick()
    assert not runs(after) and not after.asset_events, skip_text(after)


def test_a_removed_workload_identity_binding_fails_eso_can_read_secrets_naming_it(gp, fleet):
    fleet.tick()
    drift_remove_workload_identity(gp)
    evaluation = {e.check_name: e for e in gp.drift_checks().get_asset_check_evaluations()}["eso_can_read_secrets"]
    assert not evaluation.passed
    assert ("the Workload Identity binding is missing: roles/iam.workloadIdentityUser for "
            "serviceAccount:gpuplat-test.svc.id.goog[external-secrets/external-secrets]") in evaluation.description


def test_the_same_drift_coming_back_after_a_fix_starts_a_new_run(gp, fleet):
    fleet.tick()
    drift_gpu_pool_min(gp)
    first = runs(fleet.tick())
    assert gp.materialize(select=["gpu_pool"], tags=dict(first[0].tags)).success
    fleet.tick()
    time.sleep(1.1)  # the run key's first-seen part has a one-second resolution
    drift_gpu_pool_min(gp)
    second = runs(fleet.tick())
    assert len(first) == len(second) == 1
    assert first[0].tags[PLAN_HASH_TAG] == second[0].tags[PLAN_HASH_TAG]  # the same drift...
    assert first[0].run_key != second[0].run_key  # ...a new episode: Dagster would skip a reused run key


def test_one_tick_makes_a_flat_number_of_calls_and_reads_the_cluster_once(gp, fleet, envs):
    fleet.tick()  # warm the discovery cache
    gp.admin.reset()
    result = fleet.tick()
    assert not runs(result)
    calls = gp.admin.calls()
    assert calls["_total"]["mutate"] == 0, json.dumps(calls, indent=1)
    assert calls["container"]["methods"] == {"GetCluster": 1}, calls["container"]
    # Secret Manager cannot list versions across secrets: a secret counts as present only with an
    # enabled version, so each internal secret costs one version list (and the Dex pair one access each).
    per_secret = len(desired_secrets(load_environment("sandbox", envs.root)).internal_names)
    assert calls["secretmanager"]["methods"] == {"ListSecrets": 1, "ListSecretVersions": per_secret,
                                                 "AccessSecretVersion": 2}, calls["secretmanager"]
    # One read per kind of thing observed, whatever their number (Argo CD alone: its Helm release record,
    # the argocd-redis Secret, its bootstrap Job, its self-managing Application; the identities: two
    # accounts, three IAM policies, the repository; the autoscaler's events, for FailedScaleUp). The
    # project's policy is read once for all pieces.
    assert calls["cloudresourcemanager"]["methods"] == {"GetIamPolicy": 1}, calls["cloudresourcemanager"]
    assert calls["_total"]["read"] - calls["secretmanager"]["read"] <= 21, json.dumps(calls, indent=1)


@pytest.mark.parametrize("overrides", [
    {"substrate": {"kind": "gke", "sandbox": True, "external_secrets": [], "remediation": "report"}},
    {"profile": "prod"},
], ids=["remediation report", "profile prod"])
def test_report_only_never_starts_a_run_and_fails_in_sync_instead(gp, envs, overrides):
    gp.configure(**overrides)
    envs.add("sandbox")
    assert gp.materialize().success
    ticker = Ticker(build_drift_sensor(environments_root=envs.root), gp)
    assert not ticker.tick().asset_events
    drift_gpu_pool_min(gp)
    seen = ticker.tick()
    assert not runs(seen)
    failed = [e for e in evaluations(seen) if not e.passed]
    assert [(e.asset_key, e.check_name, e.partition) for e in failed] == [(AssetKey("gpu_pool"), "in_sync", "sandbox")]
    assert "autoscaling" in failed[0].metadata["plan"].value and "remediation: report" in failed[0].description
    assert [o.asset_key for o in observations(seen)] == [AssetKey("gpu_pool")]
    repeat = ticker.tick()
    assert not runs(repeat) and not repeat.asset_events

    assert gp.materialize(select=["gpu_pool"]).success  # a person fixes it
    cleared = ticker.tick()
    assert not runs(cleared)
    assert [(e.check_name, e.passed) for e in evaluations(cleared)] == [("in_sync", True)]


def test_assets_never_materialized_are_not_drift_and_cost_no_calls(gp, envs):
    envs.add("sandbox")
    ticker = Ticker(build_drift_sensor(environments_root=envs.root), gp)
    gp.admin.reset()
    result = ticker.tick()
    assert not runs(result) and not result.asset_events
    assert "11 not yet materialized" in skip_text(result)
    assert gp.admin.calls()["_total"] == {"read": 0, "mutate": 0}

    assert gp.materialize(select=["apis_enabled", "service_accounts", "cluster"]).success
    partial = ticker.tick()
    assert not runs(partial) and not partial.asset_events
    assert "3 in sync" in skip_text(partial) and "8 not yet materialized" in skip_text(partial)


def test_an_unreachable_cluster_and_a_broken_config_do_not_stop_the_other_environments(gp, envs, tmp_path):
    envs.add("sandbox", "byo", "broken")
    assert gp.materialize().success
    dead = tmp_path / "dead.kubeconfig"
    dead.write_text("apiVersion: v1\nkind: Config\nclusters:\n- name: x\n  cluster: {server: 'http://127.0.0.1:1'}\n"
                    "contexts:\n- name: x\n  context: {cluster: x, user: x}\ncurrent-context: x\n"
                    "users:\n- name: x\n  user: {token: t}\n")
    Envs.write("byo", {"cluster": {"name": "rack-1"}, "gpu_stack": "none", "secret_backend": "kubernetes",
                       "substrate": {"kind": "byo", "kubeconfig": str(dead), "external_secrets": []}})
    Envs.write("broken", "cluster: [unclosed\n")
    for asset in ALL:  # the byo environment was brought up once; its cluster is gone since
        gp.instance.report_runless_asset_event(AssetMaterialization(asset, partition="byo"))
    drift_gpu_pool_min(gp)
    ticker = Ticker(build_drift_sensor(environments_root=envs.root), gp)

    started = time.monotonic()
    result = ticker.tick()
    assert time.monotonic() - started < 15
    assert [(r.partition_key, r.asset_selection) for r in runs(result)] == [("sandbox", [AssetKey("gpu_pool")])]
    by_env: dict[str, list] = {}
    for o in observations(result):
        by_env.setdefault(o.partition, []).append(o)
    byo_errors = [o for o in by_env["byo"] if "error" in o.metadata]
    assert byo_errors and all("127.0.0.1:1" in o.metadata["error"].value for o in byo_errors), \
        [o.metadata["error"].value for o in byo_errors]
    # The byo cluster piece plans a cannot-fix (the kubeconfig does not answer): reported, not run.
    byo_cluster = [e for e in evaluations(result) if e.partition == "byo" and e.asset_key == AssetKey("cluster")]
    assert byo_cluster and not byo_cluster[0].passed and "127.0.0.1:1" in byo_cluster[0].description
    broken = by_env["broken"]
    assert {o.asset_key.path[-1] for o in broken} == set(ALL)
    assert all("valid YAML" in o.metadata["error"].value for o in broken)

    # Errors are recorded once, not every tick; the sandbox's drift is already requested.
    repeat = ticker.tick()
    assert not runs(repeat) and not repeat.asset_events
    assert "127.0.0.1:1" in skip_text(repeat) and "valid YAML" in skip_text(repeat)


# ---- wiring ----------------------------------------------------------------------------------------
def test_the_code_location_runs_both_sensors_and_the_checks_schedule_by_default():
    from dagster import DefaultScheduleStatus, DefaultSensorStatus

    from gpuplat_assets.definitions import defs

    repo = defs.get_repository_def()
    sensors = {s.name: s for s in repo.sensor_defs}
    assert sensors["drift_sensor"].minimum_interval_seconds == 60
    assert sensors["scale_to_zero_guard"].minimum_interval_seconds == 60
    assert all(s.default_status == DefaultSensorStatus.RUNNING for s in sensors.values())
    [schedule] = repo.schedule_defs
    assert (schedule.cron_schedule, schedule.job_name) == ("*/30 * * * *", "drift_checks")
    assert schedule.default_status == DefaultScheduleStatus.RUNNING
    assert "scales_to_zero" in {k.name for k in repo.asset_graph.asset_check_keys}


def test_the_drift_interval_comes_from_the_environment(monkeypatch):
    from sensors.drift import interval_from_env

    monkeypatch.setenv("GPUPLAT_DRIFT_INTERVAL_S", "5")
    assert build_drift_sensor().minimum_interval_seconds == 5 == interval_from_env()
    monkeypatch.setenv("GPUPLAT_DRIFT_INTERVAL_S", "soon")
    assert interval_from_env() == 60


def test_the_schedule_runs_every_check_once_per_environment():
    from dagster import build_schedule_context

    from gpuplat_assets.assets import PARTITIONS
    from sensors.schedules import drift_checks_schedule

    when = datetime(2026, 1, 1, 12, 30, tzinfo=timezone.utc)
    requests = drift_checks_schedule(build_schedule_context(scheduled_execution_time=when))
    assert sorted(r.partition_key for r in requests) == sorted(PARTITIONS.get_partition_keys())
    assert len({r.run_key for r in requests}) == len(requests)
    assert all(r.run_key.endswith("2026-01-01T12:30") for r in requests)


def test_changes_to_fields_gpuplat_does_not_own_start_nothing(gp, fleet):
    fleet.tick()
    # GKE auto-upgrades, labels its GPU pools, fills defaults; the autoscaler adds a GPU node.
    gp.admin.call("POST", "/sandbox/gke/upgrade", {"cluster": GKE_CLUSTER, "version": "1.34.1-gke.1200"})
    gp.admin.call("POST", "/sandbox/gke/drift/node-pool", {"cluster": GKE_CLUSTER, "nodePool": "gpu-l4", "patch": {
        "config": {"labels": {"cloud.google.com/gke-accelerator": "nvidia-l4"}}}})
    gp.admin.call("POST", "/sandbox/workloads/gpu", {"cluster": KUBE_CLUSTER, "name": "llm", "gpus": 1})
    gp.admin.call("POST", f"/sandbox/kube/{KUBE_CLUSTER}/drift", {
        "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "name": "standard-rwo", "action": "label",
        "key": "addonmanager.kubernetes.io/mode", "value": "EnsureExists"})
    for _ in range(2):
        result = fleet.tick()
        assert not runs(result) and not result.asset_events, skip_text(result)
    checks = gp.checks(gp.materialize())
    assert all(ok for (asset, check), ok in checks.items() if check == "in_sync"), checks
