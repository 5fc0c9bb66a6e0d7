"""desired/plan of every piece as pure functions: tables of cases whose names are sentences."""

from __future__ import annotations

import pytest

from substrate import apis_enabled as apis
from substrate import cluster, gpu_pool, platform_installed, secrets_seeded, snapshot_class, storage_class
from substrate.config import parse_config
from substrate.plan import Action, fingerprint, plan_hash, plan_table
from resources.models import ClusterState, NodePoolState, Quota, Taint


def env(**over):
    raw = {"cluster": {"name": "ai-dev", "projectID": "proj"}}
    for k, v in over.items():
        raw[k] = v
    return parse_config("e", "environments/e/config.yaml", raw)


def pool_state(name="gpu-l4", machine="g2-standard-4", acc="nvidia-l4", count=1, auto=(True, 0, 1),
               taints=(Taint("nvidia.com/gpu", "present", "NoSchedule"),), version="1.33.5-gke.1000", disk=100):
    return NodePoolState(name=name, status="RUNNING", machine_type=machine, disk_size_gb=disk, accelerator_type=acc,
                         accelerator_count=count, gpu_driver_version="DEFAULT", autoscaling_enabled=auto[0],
                         min_nodes=auto[1], max_nodes=auto[2], taints=taints, labels={}, service_account="",
                         version=version, image_type="COS_CONTAINERD", locations=("us-central1-a",))


def cluster_state(pools=(), **over):
    base = dict(name="ai-dev", location="us-central1-a", status="RUNNING", release_channel="REGULAR",
                workload_pool="proj.svc.id.goog", vpc_native=True, datapath_provider="ADVANCED_DATAPATH",
                endpoint="127.0.0.1", master_version="1.33.5-gke.1000", node_pools=tuple(pools))
    base.update(over)
    return ClusterState(**base)


# ---- apis_enabled ------------------------------------------------------------------------------------
# The fork's Terraform required_services (cloudbuild included), plus IAM.
BASE = {"cloudbuild.googleapis.com", "container.googleapis.com", "compute.googleapis.com", "iam.googleapis.com",
        "iamcredentials.googleapis.com"}


@pytest.mark.parametrize("config, expected", [
    pytest.param({}, BASE | {"secretmanager.googleapis.com", "artifactregistry.googleapis.com"},
                 id="gcpsm adds secretmanager, the model registry artifactregistry"),
    pytest.param({"secret_backend": "vault"}, BASE | {"artifactregistry.googleapis.com"},
                 id="another backend needs no secretmanager"),
    pytest.param({"substrate": {"model_registry": {"enabled": False}}}, BASE | {"secretmanager.googleapis.com"},
                 id="no model registry, no artifactregistry"),
])
def test_required_apis_follow_the_config(config, expected):
    assert set(apis.desired_apis(env(**config)).services) == expected


def test_missing_apis_are_enabled_in_one_update():
    spec = apis.desired_apis(env())
    actions = apis.plan_apis(spec, apis.ApisObserved(True, ("container.googleapis.com",)))
    assert [a.kind for a in actions] == ["update"]
    assert set(actions[0].args["services"]) == set(spec.services) - {"container.googleapis.com"} | {
        "cloudbilling.googleapis.com"}  # the catalog's API rides along with an enable gpuplat makes anyway


def test_the_billing_catalog_api_alone_is_never_a_reason_to_call():
    """A project the fork's Terraform built (every required API on, cloudbilling off) is adopted unchanged."""
    spec = apis.desired_apis(env())
    assert apis.plan_apis(spec, apis.ApisObserved(True, spec.services)) == []
    outcome = apis.check_required(spec, apis.ApisObserved(True, spec.services), env())
    assert outcome.passed and "gcloud services enable cloudbilling.googleapis.com" in \
        outcome.metadata["optional_not_enabled"]


def test_service_usage_off_names_the_exact_gcloud_line():
    actions = apis.plan_apis(apis.desired_apis(env()), apis.ApisObserved(True, service_usage_disabled=True))
    assert actions[0].kind == "cannot-fix"
    assert ("gcloud services enable serviceusage.googleapis.com cloudresourcemanager.googleapis.com --project proj"
            in actions[0].remedy)


def test_no_cloud_apis_apply_off_gke():
    spec = apis.desired_apis(env(substrate={"kind": "byo"}, gpu_stack="none", secret_backend="vault"))
    assert spec.services == () and apis.plan_apis(spec, apis.ApisObserved(False)) == []


def test_secret_manager_off_gke_still_needs_its_api():
    spec = apis.desired_apis(env(substrate={"kind": "hetzner"}, gpu_stack="operator"))
    assert spec.services == ("secretmanager.googleapis.com",)


# ---- cluster --------------------------------------------------------------------------------------------
CPU = pool_state(name="default-pool", machine="e2-standard-4", acc="", count=0, auto=(True, 1, 3), taints=())


@pytest.mark.parametrize("observed, expected", [
    pytest.param(None, [("create", "", True)], id="an absent cluster is created with approval"),
    pytest.param(cluster_state([CPU]), [], id="a matching cluster needs nothing"),
    pytest.param(cluster_state([CPU], status="RECONCILING", release_channel="RAPID"), [("wait", "status", False)],
                 id="a busy cluster is waited on, never updated"),
    pytest.param(cluster_state([CPU], release_channel="RAPID"), [("update", "release_channel", False)],
                 id="a changed release channel is updated in place"),
    pytest.param(cluster_state([CPU], vpc_native=False), [("cannot-fix", "vpc_native", False)],
                 id="an immutable difference is cannot-fix, never a recreate"),
    pytest.param(cluster_state([pool_state(name="default-pool", machine="e2-standard-4", acc="", count=0, auto=(True, 1, 5),
                                           taints=())]), [("update", "autoscaling", False)],
                 id="a CPU pool with another max is re-asserted"),
    pytest.param(cluster_state([CPU], master_version="1.34.0-gke.1", endpoint="10.0.0.9"), [],
                 id="versions moved by auto-upgrade and server-filled fields are not drift"),
])
def test_cluster_plan(observed, expected):
    spec = cluster.desired_cluster(env())
    got = cluster.plan_cluster(spec, cluster.ClusterObserved(observed, cluster.KubeFacts()))
    assert [(a.kind, a.field, a.needs_approval) for a in got] == expected


def test_cluster_spec_is_vpc_native_with_workload_identity_and_dataplane_v2():
    spec = cluster.desired_cluster(env())
    assert spec.vpc_native and spec.workload_pool == "proj.svc.id.goog" and spec.datapath_provider == "ADVANCED_DATAPATH"


# ---- gpu_pool --------------------------------------------------------------------------------------------
QUOTAS_OK = (Quota("GPUS_ALL_REGIONS", "global", 4, 0), Quota("NVIDIA_L4_GPUS", "us-central1", 4, 0),
             Quota("CPUS", "us-central1", 24, 4))


@pytest.mark.parametrize("observed, expected", [
    pytest.param(gpu_pool.GpuPoolObserved(None, "RUNNING", QUOTAS_OK), [("create", "", True)],
                 id="an absent pool with quota is created with approval"),
    pytest.param(gpu_pool.GpuPoolObserved(None, "RUNNING", (Quota("GPUS_ALL_REGIONS", "global", 0, 0),) + QUOTAS_OK[1:]),
                 [("cannot-fix", "quota", False)], id="a global GPU quota of zero stops the create"),
    pytest.param(gpu_pool.GpuPoolObserved(pool_state(), "RUNNING"), [], id="a matching pool needs nothing"),
    pytest.param(gpu_pool.GpuPoolObserved(pool_state(auto=(True, 1, 1)), "RUNNING"), [("update", "autoscaling", False)],
                 id="a min count drifted above zero is re-asserted"),
    pytest.param(gpu_pool.GpuPoolObserved(pool_state(taints=()), "RUNNING"), [("update", "taints", False)],
                 id="a missing GPU taint is restored"),
    pytest.param(gpu_pool.GpuPoolObserved(pool_state(taints=(Taint("nvidia.com/gpu", "present", "NoSchedule"),
                                                             Taint("team", "ml", "NoSchedule"))), "RUNNING"), [],
                 id="a taint someone else added is not ours"),
    pytest.param(gpu_pool.GpuPoolObserved(pool_state(machine="g2-standard-8"), "RUNNING"),
                 [("cannot-fix", "machine_type", False)], id="another machine type is never replaced silently"),
])
def test_gpu_pool_plan(observed, expected):
    spec = gpu_pool.desired_gpu_pool(env())
    got = gpu_pool.plan_gpu_pool(spec, observed)
    assert [(a.kind, a.field, a.needs_approval) for a in got] == expected


def test_quota_shortfall_names_metric_region_needed_and_available():
    spec = gpu_pool.desired_gpu_pool(env(substrate={"gpu_pool": {"max": 2}}))
    q = (Quota("GPUS_ALL_REGIONS", "global", 8, 0), Quota("NVIDIA_L4_GPUS", "us-central1", 1, 0),
         Quota("CPUS", "us-central1", 24, 0))
    [action] = gpu_pool.plan_gpu_pool(spec, gpu_pool.GpuPoolObserved(None, "RUNNING", q))
    assert "NVIDIA_L4_GPUS in us-central1: needs 2, 1 available" in action.remedy


def test_a_regional_cluster_needs_quota_for_max_nodes_in_each_of_its_zones():
    """A regional cluster's node pool autoscales per zone, three by default (GKE docs, "Regional clusters":
    node pools are replicated to three zones of the region), so max 1 asks quota for 3 nodes."""
    spec = gpu_pool.desired_gpu_pool(env(cluster={"name": "ai-dev", "projectID": "proj", "location": "us-central1"}))
    q = (Quota("GPUS_ALL_REGIONS", "global", 8, 0), Quota("NVIDIA_L4_GPUS", "us-central1", 2, 0),
         Quota("CPUS", "us-central1", 24, 0), Quota("IN_USE_ADDRESSES", "us-central1", 8, 0),
         Quota("CPUS_ALL_REGIONS", "global", 32, 0))
    [action] = gpu_pool.plan_gpu_pool(spec, gpu_pool.GpuPoolObserved(None, "RUNNING", q))
    assert action.kind == "cannot-fix" and "NVIDIA_L4_GPUS in us-central1: needs 3, 2 available" in action.remedy


def test_a_quota_metric_compute_does_not_report_never_blocks_the_create():
    """Compute returns only the metrics the project has (compute/v1 Quota.Metric); a missing one is unknown."""
    spec = gpu_pool.desired_gpu_pool(env(substrate={"gpu_pool": {"accelerator_type": "nvidia-h100-80gb",
                                                                 "machine_type": "a3-highgpu-1g"}}))
    q = (Quota("GPUS_ALL_REGIONS", "global", 4, 0), Quota("CPUS", "us-central1", 48, 0),
         Quota("NVIDIA_H100_GPUS", "us-central1", None, 0))
    [action] = gpu_pool.plan_gpu_pool(spec, gpu_pool.GpuPoolObserved(None, "RUNNING", q))
    assert action.kind == "create"
    outcome = gpu_pool.check_quota(spec, gpu_pool.GpuPoolObserved(None, "RUNNING", q), env())
    assert outcome.passed and "NVIDIA_H100_GPUS" in outcome.metadata["warning"]


@pytest.mark.parametrize("status", ["ERROR", "RUNNING_WITH_ERROR"])
def test_a_pool_in_error_is_cannot_fix_with_its_message_and_never_materialize(status):
    """NodePool.Status ERROR / RUNNING_WITH_ERROR ("Customer may need to reissue a request", container v1); the
    cause is the pool's StatusCondition code (GCE_STOCKOUT), never read from the message."""
    import dataclasses
    p = dataclasses.replace(pool_state(), status=status, status_message="GCE_STOCKOUT: ZONE_RESOURCE_POOL_EXHAUSTED",
                            conditions=(("GCE_STOCKOUT", "ZONE_RESOURCE_POOL_EXHAUSTED"),))
    [action] = gpu_pool.plan_gpu_pool(gpu_pool.desired_gpu_pool(env()), gpu_pool.GpuPoolObserved(p, "RUNNING"))
    assert action.kind == "cannot-fix" and "ZONE_RESOURCE_POOL_EXHAUSTED" in str(action.observed)
    assert "nvidia-tesla-t4" in action.remedy and not action.remedy.startswith("materialize")


@pytest.mark.parametrize("status", ["ERROR", "DEGRADED"])
def test_a_cluster_in_error_or_degraded_is_cannot_fix(status):
    observed = cluster_state(status=status, status_message="GKE_SERVICE_ACCOUNT_DELETED: the node account is gone")
    got = cluster.plan_cluster(cluster.desired_cluster(env()), cluster.ClusterObserved(observed, cluster.KubeFacts()))
    assert [(a.kind, a.field) for a in got] == [("cannot-fix", "status")]
    assert "GKE_SERVICE_ACCOUNT_DELETED" in str(got[0].observed) and "materialize cluster first" not in got[0].remedy


@pytest.mark.parametrize("acc, metric", [("nvidia-l4", "NVIDIA_L4_GPUS"), ("nvidia-tesla-t4", "NVIDIA_T4_GPUS"),
                                         ("nvidia-h100-80gb", "NVIDIA_H100_GPUS"),
                                         ("nvidia-a100-80gb", "NVIDIA_A100_80GB_GPUS")])
def test_quota_metric_names(acc, metric):
    assert gpu_pool.quota_metric(acc) == metric


# ---- secrets_seeded ----------------------------------------------------------------------------------------
def test_the_seed_secret_set_is_created_once_whatever_the_features_and_dex_admin_as_a_pair():
    """The set of the seed's scripts/seed-secrets.sh: its HEX_KEYS, the cookie secret, Dex's admin pair."""
    for features in ({}, {"n8n": True}, {"n8n": False, "identity": False}):
        spec = secrets_seeded.desired_secrets(env(features=features))
        actions = secrets_seeded.plan_secrets(spec, secrets_seeded.SecretsObserved(True, ()))
        targets = [a.target for a in actions]
        assert "secret n8n-encryption-key" in targets and "secret dex-tabby-client-secret" in targets
        assert "secret dex-n8n-client-secret" not in targets
        assert sum("client-secret" in t for t in targets) == 6
        assert targets[-1] == "secrets dex-admin-password + dex-admin-hash"
        assert len(targets) == 14
        present = tuple(spec.all_names)
        assert secrets_seeded.plan_secrets(spec, secrets_seeded.SecretsObserved(True, present, (), "matches")) == []


@pytest.mark.parametrize("present, versionless, dex_hash, expected", [
    pytest.param(("litellm-salt-key", "dex-admin-password", "dex-admin-hash"), ("litellm-master-key",), "matches",
                 ("update", "secret litellm-master-key", "version"),
                 id="a secret without an enabled version gets one"),
    pytest.param(("dex-admin-password",), (), "", ("create", "secret dex-admin-hash", ""),
                 id="a password without its hash gets the hash derived from it"),
    pytest.param(("dex-admin-password", "dex-admin-hash"), (), "differs", ("update", "secret dex-admin-hash", "version"),
                 id="a hash that does not verify the password is derived again"),
    pytest.param(("dex-admin-hash",), ("dex-admin-password",), "", ("cannot-fix", "secret dex-admin-password", ""),
                 id="a hash without its password needs a human: bcrypt is one-way"),
])
def test_secrets_that_are_not_whole_are_repaired(present, versionless, dex_hash, expected):
    spec = secrets_seeded.desired_secrets(env())
    others = tuple(n for n in spec.internal_names if n not in (*present, *versionless, *secrets_seeded.DEX_ADMIN))
    observed = secrets_seeded.SecretsObserved(True, (*others, *present), versionless, dex_hash)
    (action,) = secrets_seeded.plan_secrets(spec, observed)
    assert (action.kind, action.target, action.field) == expected


def test_the_dex_hash_is_the_seeds_form():
    hashed = secrets_seeded.dex_hash_of(b"0123456789abcdef0123456789abcdef")
    assert hashed.startswith(b"$2a$10$") and len(hashed) == 60
    assert secrets_seeded.hash_verifies(b"0123456789abcdef0123456789abcdef\n", hashed)
    assert not secrets_seeded.hash_verifies(b"other", hashed) and not secrets_seeded.hash_verifies(b"x", b"plain")
    assert len(secrets_seeded.generate("hex32")) == 64 and len(secrets_seeded.generate("hex16")) == 32


def test_other_backends_are_reported_never_written():
    spec = secrets_seeded.desired_secrets(env(secret_backend="vault"))
    assert secrets_seeded.plan_secrets(spec, secrets_seeded.SecretsObserved(False, ())) == []
    out = secrets_seeded.check_external(spec, secrets_seeded.SecretsObserved(False, ()), env(secret_backend="vault"))
    assert not out.passed and "https://external-secrets.io/latest/provider/" in out.metadata["remedy"]


# ---- storage and snapshots --------------------------------------------------------------------------------------
@pytest.mark.parametrize("defaults, expected", [
    pytest.param(("standard-rwo",), [], id="the configured class alone is default"),
    pytest.param(("standard-rwo", "premium-rwo"), [("update", "StorageClass premium-rwo")],
                 id="a second default loses its annotation"),
    pytest.param((), [("update", "StorageClass standard-rwo")], id="the configured class becomes default"),
])
def test_storage_plan(defaults, expected):
    spec = storage_class.desired_storage(env())
    got = storage_class.plan_storage(spec, storage_class.StorageObserved(("standard-rwo", "premium-rwo"), defaults))
    assert [(a.kind, a.target) for a in got] == expected


def test_no_storage_class_names_what_to_install():
    spec = storage_class.desired_storage(env(substrate={"kind": "byo"}, gpu_stack="none"))
    [a] = storage_class.plan_storage(spec, storage_class.StorageObserved((), ()))
    assert a.kind == "cannot-fix" and "install a CSI driver" in a.remedy


def test_snapshot_class_only_on_prod():
    assert snapshot_class.desired_snapshot(env()).needed is False
    spec = snapshot_class.desired_snapshot(env(profile="prod"))
    assert (spec.name, spec.driver) == ("gke-pd-snapshotclass", "pd.csi.storage.gke.io")
    [a] = snapshot_class.plan_snapshot(spec, snapshot_class.SnapshotObserved(True, crds=False))
    assert a.kind == "cannot-fix" and "external-snapshotter" in a.remedy
    [a] = snapshot_class.plan_snapshot(spec, snapshot_class.SnapshotObserved(True, crds=True))
    assert a.kind == "create"


# ---- platform_installed (the fork's files: tests/unit/test_fork.py) ------------------------------------------------
@pytest.mark.parametrize("config, provider", [
    pytest.param({}, {"gcpsm": {"projectID": "proj"}}, id="workload identity sets only the project"),
    pytest.param({"secret_store_auth": "sa-key"}, {"gcpsm": {"projectID": "proj", "auth": {"secretRef": {
        "secretAccessKeySecretRef": {"name": "secret-store-key", "key": "sa-key.json", "namespace": "external-secrets"}}}}},
        id="an SA key points at secret-store-key"),
    pytest.param({"secret_backend": "vault"}, {}, id="another backend gets a placeholder"),
])
def test_a_fork_without_a_store_gets_the_one_resolve_secret_store_renders(config, provider):
    assert platform_installed.rendered_store(env(**config))["spec"]["provider"] == provider


def test_drift_is_a_field_the_file_sets():
    assert platform_installed.differences({"spec": {"a": 1}}, {"spec": {"a": 1, "b": 2}, "status": {}}) == []
    assert platform_installed.differences({"spec": {"a": 1}}, {"spec": {"a": 2}}) == ["spec.a"]
    assert platform_installed.differences({"spec": {"l": ["x", "y"]}}, {"spec": {"l": ["x"]}}) == ["spec.l"]
    assert platform_installed.differences({"metadata": {"finalizers": ["f"]}}, {"metadata": {}}) == ["metadata.finalizers"]


# ---- plan records -----------------------------------------------------------------------------------------------
def test_plan_hash_and_fingerprint_are_stable():
    """The same drift seen on two ticks (objects built apart, mappings in another order) hashes the same;
    another observed value is another plan."""
    a = [Action("update", "node pool gpu-l4", "autoscaling", desired={"min": 0, "max": 1}, observed={"min": 1, "max": 1})]
    again = [Action("update", "node pool gpu-l4", "autoscaling", desired={"max": 1, "min": 0}, observed={"max": 1, "min": 1})]
    assert plan_hash(a) == plan_hash(again) and len(plan_hash(a)) == 12
    assert plan_hash(a) != plan_hash([Action("update", "node pool gpu-l4", "autoscaling", desired={"min": 0, "max": 1},
                                             observed={"min": 2, "max": 1})])
    assert plan_hash(a) != plan_hash([Action("update", "node pool gpu-l4", "taints")])
    assert fingerprint({"b": 1, "a": 2}) == fingerprint({"a": 2, "b": 1})
    assert "| update | node pool gpu-l4 | autoscaling |" in plan_table(a)


# ---- pause (lifecycle: paused) ---------------------------------------------------------------------
def test_a_pause_plan_follows_pause_sh_and_every_step_is_a_delete():
    """scripts/pause.sh: suspend Argo CD, delete Gateways, clear PDBs, destroy pools and cluster, audit disks."""
    from substrate import pause
    from resources.models import Leftover
    spec = pause.desired_pause(env(lifecycle="paused"))
    disk = Leftover("disk", "pvc-1234", "zones/us-central1-a", 20, "pd-balanced")
    observed = pause.PauseObserved("RUNNING", ("default-pool", "gpu-l4"), ("argo-cd-argocd-application-controller",),
                                   ("default/public",), ("litellm/litellm-pg",), ("litellm/litellm-pg-primary",),
                                   mine=(disk,), leftovers=(disk,))
    got = pause.plan_pause(spec, observed)
    assert [a.target for a in got] == ["Argo CD controllers", "Gateways", "PodDisruptionBudgets", "node pool default-pool",
                                       "node pool gpu-l4", "GKE cluster ai-dev", "disk pvc-1234"]
    assert {a.kind for a in got} == {"delete"}
    # Each step whole: what it removes, and why first (only the disk step carries its disk).
    assert [(a.field, a.observed, a.desired, a.needs_approval) for a in got] == [
        ("replicas", ["argo-cd-argocd-application-controller"], 0, False), ("", ["default/public"], [], False),
        ("", ["litellm/litellm-pg", "litellm/litellm-pg-primary"], [], False), ("", "RUNNING", "absent", False),
        ("", "RUNNING", "absent", False), ("", "RUNNING", "absent", False), ("", "zones/us-central1-a", "absent", False)]
    assert "selfHeal would recreate the Gateways" in got[0].remedy
    assert "releases the load balancers" in got[1].remedy and "hangs the node pools' drain" in got[2].remedy
    assert [a.args for a in got] == [{}] * 6 + [{"leftover": disk}]
    assert pause.plan_pause(spec, pause.PauseObserved("ABSENT")) == []
    [left] = pause.plan_pause(spec, pause.PauseObserved("ABSENT", mine=(disk,), leftovers=(disk,)))
    assert (left.kind, left.target) == ("delete", "disk pvc-1234")
