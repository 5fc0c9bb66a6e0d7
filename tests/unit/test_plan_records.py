"""Every field of the actions a plan returns, for the cases that decide a change in a user's cloud.

tests/unit/test_plans.py says which kind of action each case gets; here the whole record is pinned
(target, field, observed, desired, approval, remedy), since apply() and the plan table people approve
read all of it: a wrong target or desired value is a wrong change even when the kind is right.
"""

from __future__ import annotations

import pytest

from resources.models import NodePoolState, Quota, Taint
from substrate import cluster, gpu_pool, storage_class
from tests.unit.test_plans import CPU, QUOTAS_OK, cluster_state, env, pool_state

IMMUTABLE_CLUSTER = ("vpc_native is immutable: gpuplat never recreates a cluster; create a new environment with "
                     "another cluster.name and migrate")
IMMUTABLE_POOL = ("immutable on an existing pool: give substrate.gpu_pool.name a new name (gpuplat creates that pool, "
                  "with approval); delete the old pool yourself")
DEFAULT = "storageclass.kubernetes.io/is-default-class"


def record(a) -> tuple:
    return (a.kind, a.target, a.field, a.observed, a.desired, a.needs_approval, a.remedy)


@pytest.mark.parametrize("observed, expected", [
    pytest.param(None, [("create", "GKE cluster ai-dev", "", None, "us-central1-a, REGULAR, CPU pool e2-standard-4 1..3",
                         True, "")], id="create"),
    pytest.param(cluster_state([CPU], status="RECONCILING"),
                 [("wait", "GKE cluster ai-dev", "status", "RECONCILING", "RUNNING", False, "")], id="wait"),
    pytest.param(cluster_state([CPU], release_channel="RAPID"),
                 [("update", "GKE cluster ai-dev", "release_channel", "RAPID", "REGULAR", False, "")], id="update"),
    pytest.param(cluster_state([CPU], vpc_native=False),
                 [("cannot-fix", "GKE cluster ai-dev", "vpc_native", False, True, False, IMMUTABLE_CLUSTER)],
                 id="cannot-fix"),
    pytest.param(cluster_state([pool_state(name="default-pool", machine="e2-standard-4", acc="", count=0,
                                           auto=(True, 1, 5), taints=())]),
                 [("update", "node pool default-pool", "autoscaling", {"enabled": True, "max": 5, "min": 1},
                   {"enabled": True, "max": 3, "min": 1}, False, "")], id="cpu pool autoscaling"),
])
def test_cluster_actions_whole(observed, expected):
    got = cluster.plan_cluster(cluster.desired_cluster(env()), cluster.ClusterObserved(observed, cluster.KubeFacts()))
    assert [record(a) for a in got] == expected


@pytest.mark.parametrize("observed, expected", [
    pytest.param(gpu_pool.GpuPoolObserved(None, "RUNNING", QUOTAS_OK),
                 [("create", "node pool gpu-l4", "", None, "g2-standard-4 + 1x nvidia-l4, autoscaling 0..1", True, "")],
                 id="create"),
    pytest.param(gpu_pool.GpuPoolObserved(None, "RUNNING", (Quota("GPUS_ALL_REGIONS", "global", 0, 0),) + QUOTAS_OK[1:]),
                 [("cannot-fix", "node pool gpu-l4", "quota", {"GPUS_ALL_REGIONS": 0}, {"GPUS_ALL_REGIONS": 1}, False,
                   "GPUS_ALL_REGIONS in global: needs 1, 0 available (limit 0) - request a quota increase (approval "
                   "can take hours)")], id="quota"),
    pytest.param(gpu_pool.GpuPoolObserved(pool_state(auto=(True, 1, 1)), "RUNNING"),
                 [("update", "node pool gpu-l4", "autoscaling", {"enabled": True, "max": 1, "min": 1},
                   {"enabled": True, "max": 1, "min": 0}, False, "")], id="autoscaling"),
    pytest.param(gpu_pool.GpuPoolObserved(pool_state(taints=()), "RUNNING"),
                 [("update", "node pool gpu-l4", "taints", [], ["nvidia.com/gpu=present:NoSchedule"], False, "")],
                 id="taints"),
    pytest.param(gpu_pool.GpuPoolObserved(pool_state(taints=(Taint("nvidia.com/gpu", "present", "NoSchedule"),
                                                             Taint("team", "ml", "NoSchedule"))), "RUNNING"), [],
                 id="someone else's taint"),
    pytest.param(gpu_pool.GpuPoolObserved(pool_state(machine="g2-standard-8"), "RUNNING"),
                 [("cannot-fix", "node pool gpu-l4", "machine_type", "g2-standard-8", "g2-standard-4", False,
                   IMMUTABLE_POOL)], id="machine type"),
])
def test_gpu_pool_actions_whole(observed, expected):
    got = gpu_pool.plan_gpu_pool(gpu_pool.desired_gpu_pool(env()), observed)
    assert [record(a) for a in got] == expected


@pytest.mark.parametrize("defaults, expected", [
    pytest.param(("standard-rwo", "premium-rwo"),
                 [("update", "StorageClass premium-rwo", DEFAULT, "true", None, False, "")], id="second default"),
    pytest.param((), [("update", "StorageClass standard-rwo", DEFAULT, None, "true", False, "")], id="no default"),
])
def test_storage_actions_whole(defaults, expected):
    got = storage_class.plan_storage(storage_class.desired_storage(env()),
                                     storage_class.StorageObserved(("standard-rwo", "premium-rwo"), defaults))
    assert [record(a) for a in got] == expected


def test_secret_repairs_whole():
    from substrate import secrets_seeded
    spec = secrets_seeded.desired_secrets(env())

    def plan(present, versionless, dex_hash):
        others = tuple(n for n in spec.internal_names if n not in (*present, *versionless, *secrets_seeded.DEX_ADMIN))
        return [record(a) for a in secrets_seeded.plan_secrets(
            spec, secrets_seeded.SecretsObserved(True, (*others, *present), versionless, dex_hash))]
    assert plan(("litellm-salt-key", "dex-admin-password", "dex-admin-hash"), ("litellm-master-key",), "matches") == [
        ("update", "secret litellm-master-key", "version", "none (reads as absent)", "an enabled version", False, "")]
    assert plan(("dex-admin-password",), (), "") == [
        ("create", "secret dex-admin-hash", "", None, "bcrypt $2a$ of the stored dex-admin-password", False, "")]
    assert plan(("dex-admin-password", "dex-admin-hash"), (), "differs") == [
        ("update", "secret dex-admin-hash", "version", "does not verify it", "verifies dex-admin-password", False, "")]
    [(kind, target, field, observed, desired, approval, remedy)] = plan(("dex-admin-hash",), ("dex-admin-password",), "")
    assert (kind, target, field, observed, desired, approval) == (
        "cannot-fix", "secret dex-admin-password", "", "absent while its hash exists", None, False)
    assert "bcrypt is one-way" in remedy and "make reset-dex-admin" in remedy and "disable every version" in remedy


def test_snapshot_class_actions_whole():
    from substrate import snapshot_class
    spec = snapshot_class.desired_snapshot(env(profile="prod"))
    [(kind, target, field, observed, desired, approval, remedy)] = [
        record(a) for a in snapshot_class.plan_snapshot(spec, snapshot_class.SnapshotObserved(True, crds=False))]
    assert (kind, target, field, observed, desired, approval) == ("cannot-fix", "snapshot CRDs", "", "absent", None, False)
    assert "external-snapshotter" in remedy and remedy.endswith("then materialize snapshot_class")
    assert [record(a) for a in snapshot_class.plan_snapshot(spec, snapshot_class.SnapshotObserved(True, crds=True))] == [
        ("create", "VolumeSnapshotClass gke-pd-snapshotclass", "", None,
         "driver pd.csi.storage.gke.io, deletionPolicy Delete, default", False, "")]


# ---- owned(): what the fingerprint (drift) is made of -----------------------------------------------------------
def test_what_each_piece_owns_and_nothing_else():
    """owned() is what a drift is measured on: a field left out is drift never seen, a field of the
    autoscaler's (node counts) put in is drift reported for ever."""
    from substrate import apis_enabled, pause, snapshot_class
    assert apis_enabled.ApisObserved(True, ("a.googleapis.com",), True).owned() == {
        "applies": True, "enabled": ["a.googleapis.com"], "service_usage_disabled": True}
    assert storage_class.StorageObserved(("b", "a"), ("b",)).owned() == {"classes": ["a", "b"], "defaults": ["b"]}
    assert snapshot_class.SnapshotObserved(True, True, (("s", "pd", "Delete"),), ("s",)).owned() == {
        "needed": True, "crds": True, "classes": [["s", "pd", "Delete"]], "defaults": ["s"]}
    assert gpu_pool.GpuPoolObserved(None, nodes=(gpu_pool.GpuNode("n2", 1, "g2"), gpu_pool.GpuNode("n1", 1, "g2"))
                                    ).owned() == {"pool": None, "gpu_nodes": ["n1", "n2"]}
    assert gpu_pool.GpuPoolObserved(pool_state(auto=(True, 0, 2), disk=200)).owned() == {"pool": {
        "name": "gpu-l4", "machine_type": "g2-standard-4", "accelerator": "nvidia-l4", "count": 1,
        "autoscaling": [True, 0, 2], "gpu_taint": True, "driver": "DEFAULT", "disk_size_gb": 200}}
    assert gpu_pool.GpuPoolObserved(pool_state(taints=())).owned()["pool"]["gpu_taint"] is False
    kube = cluster.KubeFacts(kubeconfig="k", context="ctx", server="https://s", server_version="v1.33", node_count=7,
                             provider_schemes=("gke",), error="", kube_system_uid="uid")
    scaled = pause.Scaled("apps/v1", "StatefulSet", "argocd", "argo-cd-argocd-application-controller", 1)
    assert cluster.ClusterObserved(cluster_state([CPU]), kube, (scaled,)).owned() == {
        "scaled_down": ["StatefulSet argocd/argo-cd-argocd-application-controller"],
        "gke": {"status": "RUNNING", "release_channel": "REGULAR", "workload_pool": "proj.svc.id.goog",
                "vpc_native": True, "datapath_provider": "ADVANCED_DATAPATH", "pools": ["default-pool"]},
        "kube": {"server": "https://s", "context": "ctx", "provider_schemes": ["gke"], "error": ""}}
    assert "gke" not in cluster.ClusterObserved(None, cluster.KubeFacts()).owned()
    from resources.models import Leftover
    from substrate import secrets_seeded
    disk = Leftover("disk", "pvc-1", "zones/z", 20, "pd-balanced")
    assert pause.PauseObserved("RUNNING", ("b", "a"), ("ctl",), leftovers=(disk,), leftover_prices=(0.1,)).owned() == {
        "cluster": "RUNNING", "pools": ["b", "a"], "leftovers": ["disk zones/z/pvc-1"]}  # prices are not drift
    assert secrets_seeded.SecretsObserved(True, ("b", "a"), ("c",), "matches", ("k",)).owned() == {
        "writable": True, "present": ["a", "b"], "versionless": ["c"], "dex_hash": "matches"}


def test_argo_cd_actions_whole():
    """What the fork's bootstrap/install.sh would install, compared with the Helm release found."""
    from resources.helm import HelmRelease
    from substrate import argocd as ac
    values = {"server": {"insecure": True}, "configs": {"cm": {"a": 1}}}
    spec = ac.ArgoCDSpec("9.5.21", "bootstrap/install.sh", values, "bootstrap/values.yaml")
    wanted = "release argo-cd, chart argo-cd 9.5.21 (bootstrap/install.sh), values bootstrap/values.yaml"

    def release(version, vals):
        return HelmRelease("argo-cd", "argocd", 1, "deployed", "argo-cd", version, vals)

    def plan(observed):
        return [record(a) for a in ac.plan_argocd(spec, observed)]
    assert plan(ac.ArgoCDObserved(False)) == [
        ("create", "Secret argocd/argocd-redis", "", None, "random hex24 (create-if-absent)", False, ""),
        ("create", "Argo CD", "", None, wanted, False, "")]
    assert plan(ac.ArgoCDObserved(True, redis_secret=True)) == []  # served without a release: adopted
    [other] = plan(ac.ArgoCDObserved(True, None, ("argocd",), True))
    assert other[:6] == ("cannot-fix", "Argo CD", "release",
                         "installed as release argocd; the fork installs release argo-cd", wanted, False)
    assert "two Argo CDs would fight" in other[6] and "helm -n argocd uninstall <name>" in other[6]
    [failed] = plan(ac.ArgoCDObserved(True, None, (), True, "", "failed"))
    assert failed[:6] == ("cannot-fix", "Argo CD", "", "the bootstrap Job failed", None, False)
    assert failed[6].startswith("kubectl -n argocd logs -l app.kubernetes.io/name=argocd-bootstrap")
    assert plan(ac.ArgoCDObserved(True, release("9.1.4", {**values, "server": {"insecure": False}}), (), True)) == [
        ("update", "Argo CD release argo-cd", "chart version", "9.1.4", "9.5.21", False, ""),
        ("update", "Argo CD release argo-cd", "values", "differs from bootstrap/values.yaml at server.insecure",
         "bootstrap/values.yaml", False, "")]
    assert plan(ac.ArgoCDObserved(True, release("9.5.21", values), (), True, "9.6.0")) == [
        ("cannot-fix", "Argo CD", "chart version", "9.6.0", "9.5.21", False,
         "Argo CD manages itself: pin the same version in the fork's argo-cd Application and in bootstrap/install.sh")]
    assert plan(ac.ArgoCDObserved(True, release("9.1.0", {}), (), True, "9.5.21")) == []  # its own Application rules
    assert plan(ac.ArgoCDObserved(True, release("9.5.21", values), (), True)) == []
    assert ac.ArgoCDObserved(True, release("9.5.21", values), ("x",), True, "9.5.21", "succeeded").owned() == {
        "installed": True, "release": "argo-cd argo-cd-9.5.21 rev 1", "values_digest": spec.digest,
        "redis_secret": True, "self_managed": "9.5.21"}


def test_identities_desired_and_planned_whole():
    """The node account with GKE's least-privilege node roles (cloud.google.com/kubernetes-engine/docs/how-to/
    hardening-your-cluster#use_least_privilege_sa) and ESO's account with secretAccessor, both in the project."""
    from substrate import service_accounts as sa
    node, eso = "gke-ai-dev-nodes@proj.iam.gserviceaccount.com", "external-secrets@proj.iam.gserviceaccount.com"
    spec = sa.desired_accounts(env())
    assert spec == sa.AccountsSpec("proj", (sa.Account("gke-ai-dev-nodes", "GKE nodes for ai-dev", node),
                                            sa.Account("external-secrets", "External Secrets Operator", eso)),
                                   (("roles/logging.logWriter", f"serviceAccount:{node}"),
                                    ("roles/monitoring.metricWriter", f"serviceAccount:{node}"),
                                    ("roles/monitoring.viewer", f"serviceAccount:{node}"),
                                    ("roles/stackdriver.resourceMetadata.writer", f"serviceAccount:{node}"),
                                    ("roles/secretmanager.secretAccessor", f"serviceAccount:{eso}")))
    missing = (("roles/monitoring.viewer", f"serviceAccount:{node}"),)
    got = sa.plan_accounts(spec, sa.AccountsObserved(True, (eso,), missing))
    assert [record(a) for a in got] == [
        ("create", f"service account {node}", "", None, "GKE nodes for ai-dev", False, ""),
        ("update", "project proj IAM", "roles/monitoring.viewer", "absent", f"+ serviceAccount:{node}", False, "")]
    assert [a.args for a in got] == [{"account": spec.accounts[0]}, {"binding": missing[0]}]
    assert sa.plan_accounts(spec, sa.AccountsObserved(True, (node, eso))) == []
    default = sa.desired_accounts(env(substrate={"node_service_account": "default"}))
    assert [a.email for a in default.accounts] == [eso] and [m for _, m in default.bindings] == [f"serviceAccount:{eso}"]
    assert sa.desired_accounts(env(substrate={"kind": "byo"}, gpu_stack="none")) is None
    assert sa.plan_accounts(None, sa.AccountsObserved(False)) == []
    odd = sa.AccountsSpec("proj", (), (), ("the fork's ESO values name eso@other.iam.gserviceaccount.com, an account "
                                          "outside project proj",))
    assert [record(a) for a in sa.plan_accounts(odd, sa.AccountsObserved(True))] == [
        ("cannot-fix", "ESO service account", "", odd.problems[0], None, False,
         "annotate ESO with an account of this project (platform/external-secrets/values.yaml) or grant that account "
         "yourself")]
    assert sa.node_account_id("a-very-long-cluster-name-indeed-yes") == "gke-a-very-long-cluster-nodes"  # 30 chars max
    assert sa.AccountsObserved(True, (eso,), missing).owned() == {
        "applies": True, "existing": [eso], "missing_bindings": [list(missing[0])]}


def test_workload_identity_binding_whole():
    """ESO's Kubernetes account may act as its Google account (roles/iam.workloadIdentityUser for
    `serviceAccount:<project>.svc.id.goog[external-secrets/external-secrets]`), once both exist."""
    from substrate import workload_identity as wi
    spec = wi.desired_wi(env())
    member = "serviceAccount:proj.svc.id.goog[external-secrets/external-secrets]"
    assert spec == wi.WorkloadIdentitySpec("proj", "us-central1-a", "ai-dev",
                                           "external-secrets@proj.iam.gserviceaccount.com", member)
    target = "service account external-secrets@proj.iam.gserviceaccount.com IAM"
    role = "roles/iam.workloadIdentityUser"

    def plan(*args):
        return [record(a) for a in wi.plan_wi(spec, wi.WorkloadIdentityObserved(True, *args))]
    assert plan() == [("cannot-fix", target, role, "the account does not exist", None, False,
                       "materialize service_accounts")]
    assert plan("", True) == [("cannot-fix", target, role, "cluster ai-dev has no Workload Identity pool yet (none)",
                               None, False, "materialize cluster (it enables Workload Identity); Google refuses the "
                               "binding until then")]
    assert plan("other.svc.id.goog", True)[0][3] == "cluster ai-dev has no Workload Identity pool yet (other.svc.id.goog)"
    assert plan("proj.svc.id.goog", True) == [("update", target, role, "absent", f"+ {member}", False, "")]
    assert plan("proj.svc.id.goog", True, True, True) == []
    # A domain-scoped project (example.com:proj) has a colon in its pool: the pool is all after the first.
    scoped = wi.desired_wi(env(cluster={"name": "ai-dev", "projectID": "example.com:proj"}))
    assert [a.kind for a in wi.plan_wi(scoped, wi.WorkloadIdentityObserved(True, "example.com:proj.svc.id.goog",
                                                                           True))] == ["update"]
    assert wi.desired_wi(env(secret_backend="vault")) is None and wi.plan_wi(None, wi.WorkloadIdentityObserved(False)) == []
    assert wi.WorkloadIdentityObserved(True, "p.svc.id.goog", True, True, False, ("True", "ok")).owned() == {
        "applies": True, "pool": "p.svc.id.goog", "account": True, "binding": False}


def test_model_registry_whole():
    """A DOCKER repository in the cluster's region that the node account may pull from."""
    from substrate import model_registry as mr
    node = "gke-ai-dev-nodes@proj.iam.gserviceaccount.com"
    spec = mr.desired_registry(env())
    assert spec == mr.RegistrySpec("proj", "us-central1", "models", node, "ai-dev", "us-central1-a")
    repo = "Artifact Registry repository us-central1/models"
    grant = ("update", f"{repo} IAM", "roles/artifactregistry.reader", "absent", f"+ serviceAccount:{node}", False, "")

    def plan(*args):
        return [record(a) for a in mr.plan_registry(spec, mr.RegistryObserved(True, *args))]
    assert plan() == [("create", repo, "", None, "DOCKER, OCI modelcars for KServe", False, ""), grant]
    assert plan("MAVEN") == [("cannot-fix", repo, "format", "MAVEN", "DOCKER", False,
                              "a repository's format is immutable: set substrate.model_registry.name to a new name")]
    assert plan("DOCKER") == [grant]
    assert plan("DOCKER", True) == []
    elsewhere = mr.desired_registry(env(substrate={"model_registry": {"location": "europe-west4", "name": "m"},
                                                   "node_service_account": "default"}))
    assert (elsewhere.location, elsewhere.name, elsewhere.node_account) == ("europe-west4", "m", "")
    assert [a.kind for a in mr.plan_registry(elsewhere, mr.RegistryObserved(True))] == ["create"]  # no account to grant
    assert mr.desired_registry(env(substrate={"model_registry": {"enabled": False}})) is None
    assert mr.plan_registry(None, mr.RegistryObserved(False)) == []
    assert mr.RegistryObserved(True, "DOCKER", True, (("p", "a", ("s",)),)).owned() == {
        "applies": True, "format": "DOCKER", "node_can_read": True}


def test_gpu_stack_operator_path_whole():
    """Off GKE: probe each GPU node first (again after a failure or a new kernel), then one operator
    Application whose driver.enabled the probes decide together."""
    import json

    from substrate import gpu_stack as gs
    spec = gs.desired_gpu_stack(env(substrate={"kind": "hetzner"}, gpu_stack="operator"))
    assert (spec.mode, spec.pool, spec.operator_version) == ("operator", "gpu-l4", "v26.3.3")
    kernel = "6.8.0-57-generic"

    def report(driver_enabled, verdicts=()):
        return json.dumps({"facts": {"kernel_release": kernel}, "verdicts": list(verdicts),
                           "operator_driver_enabled": driver_enabled}, sort_keys=True)
    needs, has = report(True, [{"id": "driver", "status": "pass"}]), report(False)
    failed = report(True, [{"id": "secure-boot", "status": "fail", "message": "Secure Boot is on", "remedy": "turn it off"}])
    probe = ("create", "preflight on node n1", "", None, "probe report", False, "")
    waiting = ("create", "Application nvidia-gpu-operator", "", None, "after the preflight decides driver.enabled", False, "")

    def plan(nodes=(), kernels=((("n1", kernel)),), reports=(), app=""):
        return [record(a) for a in gs.plan_gpu_stack(spec, gs.GpuStackObserved(
            "operator", gpu_nodes=nodes, kernels=kernels, reports=reports, app_values=app))]
    assert plan() == [("cannot-fix", "GPU nodes", "", "none found", None, False,
                       "label your GPU nodes nvidia.com/gpu.present=true or set substrate.gpu_pool.node_selector")]
    assert plan(("n1",)) == [probe, waiting]
    assert plan(("n1",), reports=(("n1", failed),)) == [
        probe, ("cannot-fix", "GPU node n1", "secure-boot", "Secure Boot is on", None, False, "turn it off"), waiting]
    assert plan(("n1",), (("n1", "6.8.0-60-generic"),), (("n1", needs),), app="x") == [probe]  # a new kernel
    [split] = plan(("n1", "n2"), (("n1", kernel), ("n2", kernel)), (("n1", needs), ("n2", has)))
    assert split[:6] == ("cannot-fix", "Application nvidia-gpu-operator", "driver.enabled", {"n1": True, "n2": False},
                         None, False) and "make them alike" in split[6]
    assert plan(("n1",), reports=(("n1", needs),)) == [
        ("create", "Application nvidia-gpu-operator", "chart and values", None,
         "gpu-operator@v26.3.3 driver.enabled=True", False, "")]
    got = gs.plan_gpu_stack(spec, gs.GpuStackObserved("operator", gpu_nodes=("n1",), kernels=((("n1", kernel)),),
                                                     reports=(("n1", has),),
                                                     app_values="gpu-operator@v25.3.0 driver.enabled=True"))
    assert [record(a) for a in got] == [
        ("update", "Application nvidia-gpu-operator", "chart and values", "gpu-operator@v25.3.0 driver.enabled=True",
         "gpu-operator@v26.3.3 driver.enabled=False", False, "")]
    assert got[0].args == {"driver_enabled": False}
    same = gs.app_fingerprint(gs.operator_application(spec, True))
    assert same == "gpu-operator@v26.3.3 driver.enabled=True" and plan(("n1",), reports=(("n1", needs),), app=same) == []
    assert gs.plan_gpu_stack(gs.desired_gpu_stack(env(gpu_stack="none")), gs.GpuStackObserved("none")) == []


def test_gpu_stack_gke_path_whole():
    from substrate import gpu_stack as gs
    spec = gs.desired_gpu_stack(env())
    assert gs.plan_gpu_stack(spec, gs.GpuStackObserved("gke-managed", "DEFAULT", True)) == []
    driver, plugin = [record(a) for a in gs.plan_gpu_stack(spec, gs.GpuStackObserved("gke-managed", "", False))]
    assert driver[:6] == ("cannot-fix", "node pool gpu-l4", "gpu_driver_version",
                          "(not set: no driver installed by GKE)", "DEFAULT", False)
    assert "create the pool under a new substrate.gpu_pool.name" in driver[6]
    assert plugin[:6] == ("cannot-fix", "DaemonSets kube-system/nvidia-gpu-device-plugin-*", "", "absent", None, False)
    assert gs.GpuStackObserved("gke-managed", "LATEST", True, ("n",), app_values="v").owned() == {
        "mode": "gke-managed", "pool_driver_version": "LATEST", "device_plugin": True, "gpu_nodes": ["n"],
        "app_values": "v"}


def test_platform_root_objects_and_repo_credential_whole():
    """What `make root` and `make argocd-repo` do, as plan records: roots absent or drifted, the store
    gpuplat renders when the fork has none, and a private fork's credential from the backend."""
    from substrate import platform_installed as pi
    from substrate.config import PrivateRepo
    store = {"spec": {"provider": {"gcpsm": {"projectID": "proj"}}}}
    spec = pi.PlatformSpec("/fork", "abc", "https://github.com/o/fork", (), store, False, False, None, True)

    def plan(s=spec, **observed):
        return [record(a) for a in pi.plan_platform(s, pi.PlatformObserved(**{"installed": True, **observed}))]
    [(kind, target, field, seen, desired, approval, remedy)] = plan(installed=False)
    assert (kind, target, seen, desired) == ("cannot-fix", "Argo CD", "not installed", "installed")
    assert remedy.startswith("materialize argocd first")
    roots = (("AppProject/platform", ("absent",)), ("ApplicationSet/layer-platform", tuple(f"spec.f{i}" for i in range(8))))
    assert plan(drifted_roots=roots, secret_store="matches") == [
        ("create", "AppProject platform", "", None, "as the fork's file", False, ""),
        ("update", "ApplicationSet layer-platform", "spec.f0, spec.f1, spec.f2, spec.f3, spec.f4, spec.f5", "differs",
         "the fork's file", False, "")]
    assert plan(secret_store="absent") == [("create", "ClusterSecretStore secret-store", "spec.provider", None,
                                            {"gcpsm": {"projectID": "proj"}}, False, "")]
    assert plan(secret_store="differs")[0][0] == "update" and plan(secret_store="user-filled") == []
    forked = pi.PlatformSpec("/fork", "abc", "u", (), {"spec": {"provider": {}}}, True, True, None, True)
    assert plan(forked, secret_store="absent") == []  # the fork holds the store: Argo CD applies it
    placeholder = pi.PlatformSpec("/fork", "abc", "u", (), {"spec": {"provider": {}}}, False, True, None, False)
    assert plan(placeholder, secret_store="absent")[0][4] == "placeholder {}"

    private = pi.PlatformSpec("/fork", "abc", "u", (), store, False, False,
                              PrivateRepo(secret="repo-pat", env="FORK_PAT"), True)
    # Nothing Argo CD could not read from the fork is applied: the roots wait for the credential.
    [refused] = plan(private, secret_store="matches", repo_secret="absent", drifted_roots=roots[:1])
    assert refused[:5] == ("cannot-fix", "Argo CD repository Secret platform-repo", "", "no token to write", None)
    assert "secret repo-pat in the backend" in refused[6] and "export FORK_PAT=<token>" in refused[6]
    assert plan(private, secret_store="matches", repo_secret="absent", repo_token_in_env=True,
                drifted_roots=roots[:1]) == [
        ("create", "secret repo-pat", "", None, "from $FORK_PAT, once (value not shown)", False, ""),
        ("create", "Argo CD repository Secret platform-repo", "", "absent", "from backend secret repo-pat", False, ""),
        ("create", "AppProject platform", "", None, "as the fork's file", False, "")]
    assert plan(private, secret_store="matches", repo_secret="differs", repo_token_stored=True) == [
        ("update", "Argo CD repository Secret platform-repo", "password", "differs", "from backend secret repo-pat",
         False, "")]
    assert plan(private, secret_store="matches", repo_secret="matches") == []
    unwritable = pi.PlatformSpec("/fork", "abc", "u", (), store, False, False, PrivateRepo(env="FORK_PAT"), False)
    assert plan(unwritable, repo_secret="absent", repo_token_in_env=True)[0][0] == "cannot-fix"
    assert pi.PlatformObserved(True, roots[:1], "matches", apps=(("a", "Synced", "Healthy", True),
                                                                ("b", "OutOfSync", "Missing", False)),
                               repo_secret="matches").owned() == {
        "argocd_installed": True, "drifted_roots": {"AppProject/platform": ["absent"]}, "secret_store": "matches",
        "apps": [["a", "Synced", "Healthy"]], "repo_secret": "matches"}


def test_snapshot_class_every_branch():
    from substrate import snapshot_class as sc
    ann = "snapshot.storage.kubernetes.io/is-default-class"
    assert sc.DEFAULT_ANNOTATION == ann
    spec = sc.desired_snapshot(env(profile="prod"))
    assert spec == sc.SnapshotSpec(True, "gke-pd-snapshotclass", "pd.csi.storage.gke.io")
    assert sc.desired_snapshot(env(profile="dev")) == sc.SnapshotSpec(False)
    hetzner = sc.desired_snapshot(env(profile="prod", substrate={"kind": "hetzner", "snapshot_driver": "csi.hetzner.cloud"},
                                      gpu_stack="operator"))
    assert hetzner == sc.SnapshotSpec(True, "csi-hetzner-cloud-snapshotclass", "csi.hetzner.cloud")
    bare = sc.desired_snapshot(env(profile="prod", substrate={"kind": "byo"}, gpu_stack="none"))
    assert bare == sc.SnapshotSpec(True, "", "")
    [(kind, target, field, observed, desired, approval, remedy)] = [
        record(a) for a in sc.plan_snapshot(bare, sc.SnapshotObserved(True, True))]
    assert (kind, target, observed) == ("cannot-fix", "VolumeSnapshotClass", "no CSI driver configured")
    assert "substrate.snapshot_driver" in remedy
    mine = ("gke-pd-snapshotclass", "pd.csi.storage.gke.io", "Delete")

    def plan(classes, defaults):
        return [record(a) for a in sc.plan_snapshot(spec, sc.SnapshotObserved(True, True, classes, defaults))]
    assert plan((mine,), ("gke-pd-snapshotclass",)) == []
    assert plan((mine,), ()) == [("update", "VolumeSnapshotClass gke-pd-snapshotclass", ann, None, "true", False, "")]
    [immutable] = plan((("gke-pd-snapshotclass", "pd.csi.storage.gke.io", "Retain"),), ("gke-pd-snapshotclass",))
    assert immutable[:6] == ("cannot-fix", "VolumeSnapshotClass gke-pd-snapshotclass", "driver/deletionPolicy",
                             ["pd.csi.storage.gke.io", "Retain"], ["pd.csi.storage.gke.io", "Delete"], False)
    assert "immutable" in immutable[6]
    got = sc.plan_snapshot(spec, sc.SnapshotObserved(True, True, (mine, ("old", "x", "Delete")), ("gke-pd-snapshotclass", "old")))
    assert [record(a) for a in got] == [("update", "VolumeSnapshotClass old", ann, "true", None, False, "")]
    assert got[0].args == {"name": "old"}
    assert sc.plan_snapshot(sc.SnapshotSpec(False), sc.SnapshotObserved(False)) == []


def test_storage_class_every_branch():
    ann = "storageclass.kubernetes.io/is-default-class"
    spec = storage_class.desired_storage(env())
    assert spec == storage_class.StorageSpec("standard-rwo")
    assert storage_class.desired_storage(env(substrate={"kind": "byo", "storage_class": "fast"}, gpu_stack="none")) == \
        storage_class.StorageSpec("fast")
    unnamed = storage_class.desired_storage(env(substrate={"kind": "byo"}, gpu_stack="none"))
    assert unnamed == storage_class.StorageSpec("")

    def plan(s, classes, defaults):
        return [record(a) for a in storage_class.plan_storage(s, storage_class.StorageObserved(classes, defaults))]
    assert plan(unnamed, ("a", "b"), ("a",)) == []
    [several] = plan(unnamed, ("a", "b"), ("a", "b"))
    assert several[:5] == ("cannot-fix", "default StorageClass", "", ["a", "b"], None)
    assert "name the one to keep in substrate.storage_class" in several[6]
    [none] = plan(unnamed, ("a",), ())
    assert none[3] == "none" and none[6].endswith("existing classes: a; or name one in substrate.storage_class")
    [absent] = plan(spec, ("premium-rwo",), ())
    assert absent[:4] == ("cannot-fix", "StorageClass standard-rwo", "", "absent")
    assert "local-path-provisioner or Longhorn" in absent[6] and absent[6].endswith("existing classes: premium-rwo")
    got = storage_class.plan_storage(spec, storage_class.StorageObserved(("standard-rwo", "x"), ("x",)))
    assert [record(a) for a in got] == [("update", "StorageClass standard-rwo", ann, None, "true", False, ""),
                                        ("update", "StorageClass x", ann, "true", None, False, "")]
    assert [a.args for a in got] == [{"name": "standard-rwo", "value": "true"}, {"name": "x", "value": None}]


def test_cluster_every_branch():
    from substrate import pause
    spec = cluster.desired_cluster(env())
    target = "GKE cluster ai-dev"

    def plan(state, **kube):
        return [record(a) for a in cluster.plan_cluster(spec, cluster.ClusterObserved(state, cluster.KubeFacts(**kube)))]
    # Off GKE: only the kubeconfig can be wrong, and the remedy is the error's own, else a reachability hint.
    assert cluster.plan_cluster(None, cluster.ClusterObserved(None, cluster.KubeFacts())) == []
    off = cluster.plan_cluster(None, cluster.ClusterObserved(None, cluster.KubeFacts(
        kubeconfig="/k", server="https://x:6443", error="refused")))
    assert [record(a) for a in off] == [("cannot-fix", "kubeconfig", "/k", "refused", None, False,
                                         "check that https://x:6443 is reachable from this host")]
    told = cluster.plan_cluster(None, cluster.ClusterObserved(None, cluster.KubeFacts(error="e", remedy="do this")))
    assert told[0].remedy == "do this"
    assert cluster.kube_remedy(cluster.KubeFacts()) == "check that the API server is reachable from this host"
    [error] = plan(cluster_state([CPU], status="ERROR", status_message="stockout in us-central1-a"))
    assert error[:4] == ("cannot-fix", target, "status", "ERROR: stockout in us-central1-a")
    assert error[6] == cluster.ERROR_REMEDIES["ERROR"] and "deletes a cluster in ERROR by itself" in error[6]
    [degraded] = plan(cluster_state([CPU], status="DEGRADED", conditions=(("GCE_QUOTA", "no CPUs"), ("X", "y"))))
    assert degraded[3] == "DEGRADED: GCE_QUOTA: no CPUs; X: y" and "GKE needs a person" in degraded[6]
    assert plan(cluster_state([CPU], status="DEGRADED"))[0][3] == "DEGRADED: no reason given"
    [dp] = plan(cluster_state([CPU], datapath_provider="LEGACY_DATAPATH"))
    assert dp[:6] == ("cannot-fix", target, "datapath_provider", "LEGACY_DATAPATH", "ADVANCED_DATAPATH", False)
    assert plan(cluster_state([CPU], workload_pool="")) == [
        ("cannot-fix", target, "workload_pool", "", "proj.svc.id.goog", False,
         "gcloud container clusters update ai-dev --location us-central1-a --workload-pool=proj.svc.id.goog")]
    [missing] = cluster.plan_cluster(spec, cluster.ClusterObserved(cluster_state([]), cluster.KubeFacts()))
    assert record(missing) == ("create", "node pool default-pool", "", None, "e2-standard-4 1..3", True, "")
    assert missing.args == {"pool": spec.cpu_pool}
    [machine] = plan(cluster_state([pool_state(name="default-pool", machine="e2-standard-8", acc="", count=0,
                                               auto=(True, 1, 3), taints=())]))
    assert machine[:6] == ("cannot-fix", "node pool default-pool", "machine_type", "e2-standard-8", "e2-standard-4", False)
    assert "set substrate.cpu_pool.name to a new pool name" in machine[6]
    [off_auto] = plan(cluster_state([pool_state(name="default-pool", machine="e2-standard-4", acc="", count=0,
                                                auto=(False, 1, 3), taints=())]))
    assert off_auto[3:5] == ({"enabled": False, "min": 1, "max": 3}, {"enabled": True, "min": 1, "max": 3})
    scaled = pause.Scaled("apps/v1", "StatefulSet", "argocd", "ctl", 2)
    got = cluster.plan_cluster(spec, cluster.ClusterObserved(cluster_state([CPU]), cluster.KubeFacts(), (scaled,)))
    assert [record(a) for a in got] == [("update", "StatefulSet argocd/ctl", "replicas", 0, 2, False,
                                         "scaled to 0 by a pause that stopped before deleting the cluster")]
    assert got[0].args == {"scaled": scaled}


def test_gpu_pool_every_branch():
    from resources.models import NodePoolSpec
    spec = gpu_pool.desired_gpu_pool(env())
    node = "gke-ai-dev-nodes@proj.iam.gserviceaccount.com"
    assert spec == gpu_pool.GpuPoolSpec("ai-dev", "us-central1-a", "us-central1", NodePoolSpec(
        name="gpu-l4", machine_type="g2-standard-4", min_nodes=0, max_nodes=1, disk_size_gb=100,
        accelerator_type="nvidia-l4", accelerator_count=1, gpu_driver_version="DEFAULT",
        taints=(Taint("nvidia.com/gpu", "present", "NoSchedule"),), service_account=node), zones=1)
    regional = gpu_pool.desired_gpu_pool(env(cluster={"name": "ai-dev", "projectID": "proj", "location": "us-central1"}))
    assert regional.zones == 3
    off = gpu_pool.desired_gpu_pool(env(substrate={"kind": "hetzner", "gpu_pool": {"node_selector": {"gpu": "yes"}}},
                                        gpu_stack="operator"))
    assert off.pool is None and gpu_pool.plan_gpu_pool(off, gpu_pool.GpuPoolObserved(None)) == []
    target = "node pool gpu-l4"

    def plan(observed):
        return [record(a) for a in gpu_pool.plan_gpu_pool(spec, observed)]
    assert plan(gpu_pool.GpuPoolObserved(None, "ABSENT")) == [
        ("cannot-fix", target, "", "cluster absent", None, False, "materialize cluster first")]
    assert plan(gpu_pool.GpuPoolObserved(None, "RECONCILING")) == [
        ("wait", target, "status", "RECONCILING", "RUNNING", False, "")]
    busy_pool = NodePoolState(**{**vars(pool_state()), "status": "PROVISIONING"})
    assert plan(gpu_pool.GpuPoolObserved(busy_pool, "RUNNING"))[0][:2] == ("wait", target)
    broken = NodePoolState(**{**vars(pool_state()), "status": "ERROR", "status_message": "boom"})
    [err] = plan(gpu_pool.GpuPoolObserved(broken, "RUNNING"))
    assert err[:4] == ("cannot-fix", target, "status", "ERROR: boom")
    rows = plan(gpu_pool.GpuPoolObserved(pool_state(acc="nvidia-tesla-t4", count=2, disk=200), "RUNNING"))
    assert [(r[0], r[2], r[3], r[4]) for r in rows] == [("cannot-fix", "accelerator_type", "nvidia-tesla-t4", "nvidia-l4"),
                                                        ("cannot-fix", "accelerator_count", 2, 1),
                                                        ("cannot-fix", "disk_size_gb", 200, 100)]
    extra = (Taint("team", "ml", "NoSchedule"),)
    got = gpu_pool.plan_gpu_pool(spec, gpu_pool.GpuPoolObserved(pool_state(taints=extra), "RUNNING"))
    assert [record(a) for a in got] == [("update", target, "taints", ["team=ml:NoSchedule"],
                                         ["nvidia.com/gpu=present:NoSchedule"], False, "")]
    assert got[0].args == {"taints": extra + (Taint("nvidia.com/gpu", "present", "NoSchedule"),)}  # theirs kept
    assert [gpu_pool.quota_metric(a) for a in ("nvidia-l4", "nvidia-tesla-t4", "nvidia-h100-80gb", "nvidia-a100-80gb")] \
        == ["NVIDIA_L4_GPUS", "NVIDIA_T4_GPUS", "NVIDIA_H100_GPUS", "NVIDIA_A100_80GB_GPUS"]


def test_pause_every_branch():
    from resources.models import Leftover
    from substrate import pause
    spec = pause.desired_pause(env(lifecycle="paused"))
    assert spec == pause.PauseSpec("proj", "us-central1-a", "ai-dev", "e")
    disk = Leftover("disk", "pvc-1", "zones/us-central1-a", 20, "pd-balanced")
    address = Leftover("address", "gw-ip", "regions/us-central1", 0, "")
    gone = pause.plan_pause(spec, pause.PauseObserved("ABSENT", mine=(disk,), leftovers=(disk, address)))
    assert [record(a) for a in gone] == [("delete", "disk pvc-1", "", "zones/us-central1-a", "absent", False,
                                          "this environment's volume's disk, left behind by its cluster")]
    assert gone[0].args == {"leftover": disk}  # the address is audited, never deleted by the pause
    assert [record(a) for a in pause.plan_pause(spec, pause.PauseObserved("STOPPING"))] == [
        ("wait", "GKE cluster ai-dev", "status", "STOPPING", "ABSENT", False, "")]
    bare = pause.plan_pause(spec, pause.PauseObserved("RUNNING"))
    assert [record(a) for a in bare] == [("delete", "GKE cluster ai-dev", "", "RUNNING", "absent", False, "")]
    cnpg_only = pause.plan_pause(spec, pause.PauseObserved("RUNNING", cnpg_clusters=("db/pg",)))
    assert [(a.target, a.observed) for a in cnpg_only][0] == ("PodDisruptionBudgets", ["db/pg"])


# ---- the records themselves: what a person approves, what a fingerprint hashes ------------------------------
def test_the_plan_table_people_approve_is_exact():
    from substrate.plan import Action, plan_table
    assert plan_table([]) == "No changes: the live state matches the config."
    table = plan_table([Action("create", "GKE cluster a", desired="x", needs_approval=True),
                        Action("update", "pool|p", "f", desired={"b": 1, "a": [2]}, observed="line\nbreak"),
                        Action("cannot-fix", "t", observed="y" * 90, remedy="do it")])
    assert table.splitlines() == [
        "| action | target | field | observed | desired | approval | remedy |",
        "|---|---|---|---|---|---|---|",
        "| create | GKE cluster a |  |  | x | needed |  |",
        '| update | pool\\|p | f | line break | {"a": [2], "b": 1} |  |  |',
        f"| cannot-fix | t |  | {'y' * 77}... |  |  | do it |"]


def test_an_action_summary_says_what_and_why_in_one_line():
    from substrate.plan import Action
    assert Action("create", "GKE cluster a").summary() == "create GKE cluster a"
    assert Action("update", "pool p", "autoscaling", desired={"min": 0}, observed={"min": 1}).summary() == \
        'update pool p autoscaling: {"min": 1} -> {"min": 0}'
    assert Action("cannot-fix", "t", "f", observed="broken " * 20, remedy="fix").summary() == \
        f"cannot-fix t f: {'broken ' * 20} (fix)"  # what is wrong, whole
    assert Action("cannot-fix", "t", observed=["not", "text"]).summary() == "cannot-fix t"
    assert Action("delete", "d", observed="x", remedy="why").summary() == "delete d (why)"
    assert Action("create", "c", args={"secret": "s3cr3t"}).public() == {
        "kind": "create", "target": "c", "field": "", "desired": None, "observed": None, "needs_approval": False,
        "remedy": ""}


def test_fingerprints_are_of_the_canonical_json():
    import hashlib

    from substrate.plan import canonical, desired_fingerprint, fingerprint
    assert canonical({"b": 1, "a": [1, {"d": 2, "c": 3}]}) == '{"a":[1,{"c":3,"d":2}],"b":1}'
    assert fingerprint({"b": 1, "a": 2}) == hashlib.sha256(b'{"a":2,"b":1}').hexdigest()[:16]
    assert desired_fingerprint(storage_class.StorageSpec("x")) == hashlib.sha256(b'{"name":"x"}').hexdigest()[:16]
    assert desired_fingerprint({"name": "x"}) == desired_fingerprint(storage_class.StorageSpec("x"))


def test_secrets_every_branch():
    from substrate import secrets_seeded as ss
    spec = ss.desired_secrets(env())
    assert spec.internal[:3] == (("litellm-master-key", "hex32"), ("litellm-salt-key", "hex32"), ("vllm-api-key", "hex32"))
    everything = tuple(n for n, _ in spec.internal)

    def plan(present, **observed):
        return ss.plan_secrets(spec, ss.SecretsObserved(True, present, **observed))
    first = plan(())
    assert record(first[0]) == ("create", "secret litellm-master-key", "", None, "random (hex32)", False, "")
    assert first[0].args == {"generator": "hex32", "name": "litellm-master-key"}
    assert record(first[-1]) == ("create", "secrets dex-admin-password + dex-admin-hash", "", None,
                                 "random (hex16) + its bcrypt $2a$ hash", False, "")
    assert first[-1].args == {"dex": True}
    versionless = plan(everything[1:] + ss.DEX_ADMIN, versionless=(everything[0],))
    assert versionless[0].args == {"generator": "hex32", "name": "litellm-master-key"}
    [disabled] = plan(everything + ("dex-admin-hash",), unreadable=(("dex-admin-password", "DISABLED"),))
    assert record(disabled)[:4] == ("cannot-fix", "secret dex-admin-password", "", "DISABLED")
    assert "gcloud secrets versions enable <version> --secret dex-admin-password" in disabled.remedy
    [absent] = plan(everything + ("dex-admin-hash",), unreadable=(("dex-admin-password", "no version"),))
    assert absent.observed == "absent while its hash exists"
    assert plan(everything + ss.DEX_ADMIN, dex_hash="differs")[0].args == {"dex": True}
    assert ss.plan_secrets(spec, ss.SecretsObserved(False, ())) == []  # another backend: reported, never written


def test_apis_every_branch():
    from substrate import apis_enabled as ap
    spec = ap.desired_apis(env())
    assert spec.optional == ("cloudbilling.googleapis.com",)
    got = ap.plan_apis(spec, ap.ApisObserved(True, ("container.googleapis.com",)))
    missing = [s for s in spec.services if s != "container.googleapis.com"] + ["cloudbilling.googleapis.com"]
    assert [record(a) for a in got] == [("update", "project proj", "enabled services", [], missing, False, "")]
    assert got[0].args == {"services": missing}
    assert [record(a) for a in ap.plan_apis(spec, ap.ApisObserved(True, (), True))] == [
        ("cannot-fix", "project proj", "serviceusage.googleapis.com", "disabled", "enabled", False,
         "a blank project needs its bootstrap APIs first: gcloud services enable serviceusage.googleapis.com "
         "cloudresourcemanager.googleapis.com --project proj")]
    assert ap.plan_apis(spec, ap.ApisObserved(True, spec.services)) == []  # billing's API alone: never a call
    assert ap.plan_apis(spec, ap.ApisObserved(False)) == []


def test_argo_cd_desired_from_the_fork_or_the_config(tmp_path):
    """The chart version from the fork's bootstrap/install.sh (CHART_VERSION=), the config's override first,
    gpuplat's default only when the fork has neither; the values from bootstrap/argo-cd/values.yaml."""
    from substrate import argocd as ac
    from substrate.fork import Fork
    fork = Fork(tmp_path, "e")
    bare = ac.desired_argocd(env(), fork)
    assert bare == ac.ArgoCDSpec("9.5.21", "gpuplat's default (the fork has no bootstrap/install.sh)", {},
                                 "none (the fork has no values file)")
    (tmp_path / "bootstrap" / "argo-cd").mkdir(parents=True)
    (tmp_path / "bootstrap" / "install.sh").write_text('#!/bin/sh\nCHART_VERSION="9.4.0"\nhelm upgrade --install\n')
    (tmp_path / "bootstrap" / "argo-cd" / "values.yaml").write_text("server:\n  insecure: true\n")
    assert ac.desired_argocd(env(), fork) == ac.ArgoCDSpec("9.4.0", "bootstrap/install.sh CHART_VERSION",
                                                         {"server": {"insecure": True}}, "bootstrap/argo-cd/values.yaml")
    pinned = ac.desired_argocd(env(substrate={"argocd_chart_version": "9.6.1"}), fork)
    assert (pinned.chart_version, pinned.version_from) == ("9.6.1", "substrate.argocd_chart_version")


def test_platform_desired_from_the_fork(tmp_path):
    """`make root`'s objects from the fork; the store the fork holds (Argo CD applies it) or the one gpuplat
    renders; a private fork's credential; Secret Manager writable only with gcpsm."""
    import yaml

    from substrate import platform_installed as pi
    from substrate.fork import SECRET_STORE_FILE
    from tests.platform_tree import example_platform
    example_platform(tmp_path, ["e"], "proj")
    url = "https://github.com/example/gpu-inference-platform"
    spec = pi.desired_platform(env(substrate={"platform_repo": str(tmp_path)}, repoURL=url))
    assert (spec.repo, spec.commit, spec.repo_url) == (str(tmp_path), "not a git checkout", url)
    assert [(r["kind"], r["metadata"]["name"]) for r in spec.roots] == [("AppProject", "platform"),
                                                                        ("ApplicationSet", "layer-platform")]
    assert spec.secret_store["spec"]["provider"] == {"gcpsm": {"projectID": "proj"}}
    assert (spec.store_from_fork, spec.store_is_placeholder, spec.private_repo, spec.backend_writable) == \
        (False, False, None, True)
    vault = pi.desired_platform(env(substrate={"platform_repo": str(tmp_path), "private_repo": {"secret": "pat"}},
                                    repoURL=url, secret_backend="vault"))
    assert (vault.store_from_fork, vault.store_is_placeholder, vault.backend_writable) == (False, True, False)
    assert (vault.private_repo.secret, vault.secret_store["spec"]["provider"]) == ("pat", {})
    held = {"apiVersion": "external-secrets.io/v1", "kind": "ClusterSecretStore", "metadata": {"name": "secret-store"},
            "spec": {"provider": {"vault": {"server": "https://v"}}}}
    (tmp_path / SECRET_STORE_FILE).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / SECRET_STORE_FILE).write_text(yaml.safe_dump(held))
    forked = pi.desired_platform(env(substrate={"platform_repo": str(tmp_path)}, repoURL=url, secret_backend="vault"))
    assert (forked.secret_store, forked.store_from_fork, forked.store_is_placeholder) == (held, True, False)


def test_an_eso_account_of_another_project_is_named_never_granted(tmp_path):
    from substrate import service_accounts as sa
    from tests.platform_tree import example_platform
    example_platform(tmp_path, ["e"], "other")  # the fork's ESO values name external-secrets@other...
    spec = sa.desired_accounts(env(substrate={"platform_repo": str(tmp_path)}))
    assert spec.problems == ("the fork's ESO values name external-secrets@other.iam.gserviceaccount.com, an account "
                             "outside project proj",)
    assert [a.account_id for a in spec.accounts] == ["gke-ai-dev-nodes"]  # ...so only the node account is made
    assert all("external-secrets" not in member for _, member in spec.bindings)


# ---- what the mutation tester found unpinned (benchmarks/mutation_score.py) ----------------------------------
def test_remedies_are_exact_where_a_person_acts_on_them():
    from resources.models import Leftover
    from substrate import gpu_stack as gs
    from substrate import pause
    from substrate import snapshot_class as sc
    got = pause.plan_pause(pause.desired_pause(env(lifecycle="paused")), pause.PauseObserved(
        "RUNNING", (), ("ctl",), ("default/gw",), ("db/pg",), mine=(), leftovers=(Leftover("disk", "d", "z", 1, ""),)))
    assert [a.remedy for a in got[:3]] == [
        "suspended first: selfHeal would recreate the Gateways", "their controller releases the load balancers",
        "a PDB allowing no disruption hangs the node pools' drain; CloudNativePG's Clusters go first, with their "
        "operator stopped"]
    spec = sc.desired_snapshot(env(profile="prod"))
    [immutable] = sc.plan_snapshot(spec, sc.SnapshotObserved(True, True, (("gke-pd-snapshotclass", "x", "Delete"),)))
    assert immutable.remedy == ("driver and deletionPolicy of a VolumeSnapshotClass are immutable: delete it and "
                                "materialize snapshot_class")
    [driverless] = sc.plan_snapshot(sc.SnapshotSpec(True, "", ""), sc.SnapshotObserved(True, True))
    assert driverless.remedy == "set substrate.snapshot_driver to your CSI driver (e.g. csi.hetzner.cloud)"
    unnamed = storage_class.StorageSpec("")
    [several] = storage_class.plan_storage(unnamed, storage_class.StorageObserved(("a", "b"), ("a", "b")))
    assert (several.target, several.remedy) == (
        "default StorageClass", "several classes are marked default: name the one to keep in substrate.storage_class")
    [none] = storage_class.plan_storage(unnamed, storage_class.StorageObserved((), ()))
    assert none.target == "default StorageClass"
    ops = gs.desired_gpu_stack(env(substrate={"kind": "hetzner"}, gpu_stack="operator"))
    bare = '{"facts": {}, "operator_driver_enabled": true, "verdicts": [{"status": "fail"}]}'
    got = gs.plan_gpu_stack(ops, gs.GpuStackObserved("operator", gpu_nodes=("n1",), reports=(("n1", bare),)))
    assert [(a.kind, a.field, a.remedy, a.args) for a in got] == [
        ("create", "", "", {"node": "n1"}), ("cannot-fix", "", "see the preflight report", {}),
        ("create", "", "", {})]
    split = '{"facts": {}, "operator_driver_enabled": false, "verdicts": []}'
    ok = '{"facts": {}, "operator_driver_enabled": true, "verdicts": []}'
    [disagree] = gs.plan_gpu_stack(ops, gs.GpuStackObserved("operator", gpu_nodes=("a", "b"),
                                                            reports=(("a", ok), ("b", split))))
    assert disagree.remedy == ("some GPU nodes have a preinstalled driver and others need one: make them alike, or "
                               "select one kind with substrate.gpu_pool.node_selector")
    from substrate import secrets_seeded as ss
    sspec = ss.desired_secrets(env())
    [lost] = ss.plan_secrets(sspec, ss.SecretsObserved(True, tuple(n for n, _ in sspec.internal) + ("dex-admin-hash",)))
    assert lost.remedy == ("bcrypt is one-way, so the password cannot be recovered from the hash: rotate the admin "
                           "(the seed's make reset-dex-admin), or disable every version of dex-admin-hash to let "
                           "gpuplat create a new pair")
    [derive] = ss.plan_secrets(sspec, ss.SecretsObserved(True, tuple(n for n, _ in sspec.internal) + ("dex-admin-password",)))
    assert derive.args == {"dex": True}
    from substrate import platform_installed as pi
    [absent] = pi.plan_platform(pi.PlatformSpec("/f", "c", "u", (), {}, True, False, None, True), pi.PlatformObserved(False))
    assert absent.remedy == "materialize argocd first: it installs Argo CD, which applies the fork's root objects"


def test_desired_specs_carry_every_field_they_are_given(tmp_path):
    from resources.models import NodePoolSpec
    from substrate import apis_enabled, gpu_stack
    from substrate import secrets_seeded as ss
    from substrate import workload_identity as wi
    from tests.platform_tree import example_platform
    hetzner = env(cluster={"name": "h1", "projectID": "proj", "location": "fsn1"},
                  substrate={"kind": "hetzner", "gpu_pool": {"node_selector": {"gpu": "yes", "a": "b"}},
                             "probe_image": "ghcr.io/me/probe:1"}, gpu_stack="operator")
    assert gpu_pool.desired_gpu_pool(hetzner) == gpu_pool.GpuPoolSpec("h1", "fsn1", hetzner.region, None,
                                                                      (("a", "b"), ("gpu", "yes")))
    stack = gpu_stack.desired_gpu_stack(hetzner)
    assert (stack.probe_image, stack.node_selector) == ("ghcr.io/me/probe:1", (("a", "b"), ("gpu", "yes")))
    assert apis_enabled.desired_apis(hetzner).project == "proj"
    pool = gpu_pool.desired_gpu_pool(env(substrate={"gpu_pool": {"disk_size_gb": 250}})).pool
    assert isinstance(pool, NodePoolSpec) and pool.disk_size_gb == 250
    cpu = cluster.desired_cluster(env()).cpu_pool
    assert cpu.service_account == "gke-ai-dev-nodes@proj.iam.gserviceaccount.com"
    unresolved = ss.desired_secrets(env(substrate={"platform_repo": str(tmp_path)}))
    assert unresolved.platform_keys is None and "groups.generated.yaml" in unresolved.platform_keys_error
    example_platform(tmp_path, ["e"], "proj")
    sspec = ss.desired_secrets(env(substrate={"platform_repo": str(tmp_path)}))
    assert (sspec.project, sspec.backend, sspec.platform_keys_error) == ("proj", "gcpsm", "")
    assert sspec.names_from and isinstance(sspec.platform_keys, dict)
    values = tmp_path / "platform" / "external-secrets" / "values.yaml"
    import yaml
    chart = yaml.safe_load(values.read_text())
    chart["serviceAccount"]["name"] = "eso-reader"
    values.write_text(yaml.safe_dump(chart))
    member = wi.desired_wi(env(substrate={"platform_repo": str(tmp_path)})).member
    assert member == "serviceAccount:proj.svc.id.goog[external-secrets/eso-reader]"


def test_argo_cd_names_what_differs_and_who_else_installed_it():
    from resources.helm import HelmRelease
    from substrate import argocd as ac
    want = {f"k{i}": i for i in range(10)}
    spec = ac.ArgoCDSpec("9.5.21", "s", want, "v.yaml")
    live = HelmRelease("argo-cd", "argocd", 3, "deployed", "argo-cd", "9.5.21", {})
    [values] = ac.plan_argocd(spec, ac.ArgoCDObserved(True, live, (), True))
    assert values.observed == "differs from v.yaml at " + ", ".join(f"k{i}" for i in range(8))  # the first eight
    [other] = ac.plan_argocd(spec, ac.ArgoCDObserved(True, None, ("a", "b"), True))
    assert other.observed == "installed as release a, b; the fork installs release argo-cd"
    assert ac.ArgoCDObserved(False).owned() == {"installed": False, "release": "", "values_digest": "",
                                                "redis_secret": False, "self_managed": ""}


def test_a_config_error_from_the_fork_names_the_environment_s_file(tmp_path):
    from substrate import platform_installed as pi
    from substrate.config import ConfigError
    from tests.platform_tree import example_platform
    example_platform(tmp_path, ["e"], "proj")
    with pytest.raises(ConfigError) as err:
        pi.desired_platform(env(substrate={"platform_repo": str(tmp_path)}, repoURL="https://github.com/o/elsewhere"))
    assert "the repoURL of environments/e/config.yaml (https://github.com/o/elsewhere)" in str(err.value)


def test_quota_shortfalls_are_each_named_and_fingerprints_take_any_value():
    from pathlib import Path

    from substrate.plan import canonical
    spec = gpu_pool.desired_gpu_pool(env())
    [short] = gpu_pool.plan_gpu_pool(spec, gpu_pool.GpuPoolObserved(None, "RUNNING", (
        Quota("GPUS_ALL_REGIONS", "global", 0, 0), Quota("NVIDIA_L4_GPUS", "us-central1", 0, 0),
        Quota("CPUS", "us-central1", 24, 4))))
    assert short.remedy.startswith("GPUS_ALL_REGIONS in global: needs 1, 0 available (limit 0); NVIDIA_L4_GPUS in "
                                   "us-central1: needs 1, 0 available (limit 0)")
    assert canonical({"p": Path("/x")}) == '{"p":"/x"}'
