"""gpuplat against the seed platform's own files, with the seed's own tools beside it.

The fork is the seed snapshot (`platform_fork`: --platform-fork or GPUPLAT_PLATFORM_FORK, default
`tests.conftest.DEFAULT_FORK`; skipped with a line without one). What the seed's `make` targets
run is run as they run it: `kubectl apply -f` of the root files (`make root`), the fork's
`bootstrap/install.sh` (`make bootstrap`), its `scripts/seed-secrets.sh` (`make seed-secrets`, with the
real gcloud against the sandbox's Secret Manager). Only helm is a stand-in: the machine has no
charts, so `helm upgrade --install` reaches the sandbox's simulated Helm install instead.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

# Slow tier: processes and the fork's own scripts, end to end (CI runs it; see README, Tests).
pytestmark = pytest.mark.slow

ENV = "ai-dev"
PROJECT = "ai-lab"  # the seed's config.yaml
CLUSTER = f"projects/{PROJECT}/locations/us-central1-a/clusters/ai-dev"
ALL = ["apis_enabled", "service_accounts", "cluster", "workload_identity", "gpu_pool", "model_registry", "secrets_seeded",
       "gpu_stack", "storage_class", "snapshot_class", "argocd", "platform_installed"]

FAKE_HELM = '''#!{python}
"""helm as the seed's install.sh calls it, on a machine without charts: `repo add|update` do nothing;
`upgrade --install <release> <chart> --version V --namespace N -f values` asks the sandbox to simulate
the install (POST /sandbox/argocd/helm-install)."""
import json, os, sys, urllib.request
import yaml

args = sys.argv[1:]
if args[:1] == ["repo"]:
    sys.exit(0)
assert args[:2] == ["upgrade", "--install"], args
opt = lambda flag: args[args.index(flag) + 1] if flag in args else None
body = {{"cluster": os.environ["SANDBOX_CLUSTER"], "release": args[2], "version": opt("--version"),
        "namespace": opt("--namespace") or "default", "values": yaml.safe_load(open(opt("-f"))) if opt("-f") else {{}}}}
req = urllib.request.Request(os.environ["SANDBOX_ADMIN"] + "/sandbox/argocd/helm-install", method="POST",
                             data=json.dumps(body).encode(), headers={{"Content-Type": "application/json"}})
print(json.load(urllib.request.urlopen(req)))
'''


@pytest.fixture
def seed(gp, platform_fork, tmp_path):
    """The seed's ai-dev environment against the sandbox: its config.yaml as the fork has it, plus
    what gpuplat keeps in `substrate:` (the sandbox, the fork's path)."""
    raw = yaml.safe_load((platform_fork / "environments" / ENV / "config.yaml").read_text())
    raw["substrate"] = {"kind": "gke", "sandbox": True, "external_secrets": [], "platform_repo": str(platform_fork)}
    gp.write(ENV, raw)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "helm").write_text(FAKE_HELM.format(python=sys.executable))
    (bin_dir / "helm").chmod(0o755)
    state = Path(gp.sandbox.state_dir)
    env = {**os.environ, "PATH": f"{bin_dir}:{Path(sys.executable).parent}:{os.environ['PATH']}",
           "CLOUDSDK_CONFIG": str(state / "gcloud"), "SANDBOX_ADMIN": gp.admin.urls["admin"],
           "SANDBOX_CLUSTER": CLUSTER, "CLUSTER_KUBECONFIG": str(gp.tmp_path / "kube" / f"{ENV}.kubeconfig")}
    env.pop("KUBECONFIG", None)
    yield type("Seed", (), {"fork": platform_fork, "env": env, "kubeconfig": env["CLUSTER_KUBECONFIG"], "gp": gp})


def run(cmd: list[str], env: dict, cwd: Path | None = None, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=180)
    if check:
        assert done.returncode == 0, f"{cmd}: {done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    return done


def make_root(seed, layer: str = "platform") -> list[str]:
    """`make root PROFILE=platform`: kubectl apply of the fork's projects and the layer's ApplicationSet."""
    files = ["-f", str(seed.fork / f"clusters/{ENV}/projects"), "-f", str(seed.fork / f"clusters/{ENV}/appsets/{layer}.yaml")]
    out = run(["kubectl", "--kubeconfig", seed.kubeconfig, "apply", *files], seed.env).stdout
    return out.strip().splitlines()


def mutations(gp, api: str | None = None) -> int:
    calls = gp.admin.calls()
    return (calls.get(api) or {}).get("mutate", 0) if api else calls["_total"]["mutate"]


def test_gpuplat_then_make_root_changes_nothing_and_kubectl_diff_is_empty(gp, seed):
    first = gp.materialize(ALL, env=ENV)
    checks = {e.check_name: e for e in first.get_asset_check_evaluations() if e.asset_key.path == ["platform_installed"]}
    # The seed's platform layer: every group and every catalog Application it generates Synced and Healthy.
    assert checks["applications_healthy"].passed, checks["applications_healthy"].description
    assert int(checks["applications_healthy"].description.split("/")[0]) >= 15
    assert checks["secret_store_ready"].passed, checks["secret_store_ready"].description
    gp.admin.reset()
    assert make_root(seed) == ["appproject.argoproj.io/platform unchanged",
                               "applicationset.argoproj.io/layer-platform unchanged"]
    files = ["-f", str(seed.fork / f"clusters/{ENV}/projects"), "-f", str(seed.fork / f"clusters/{ENV}/appsets/platform.yaml")]
    diff = run(["kubectl", "--kubeconfig", seed.kubeconfig, "diff", *files], seed.env, check=False)
    assert (diff.returncode, diff.stdout) == (0, ""), diff.stdout + diff.stderr
    assert mutations(gp, "kubernetes") == 0
    # And gpuplat's next look (the drift tick's observe and plan, through a materialization) sees nothing to do.
    result = gp.materialize(["platform_installed"], env=ENV)
    [mat] = [e for e in result.get_asset_materialization_events()]
    assert mat.materialization.metadata["actions_applied"].value == 0
    assert mutations(gp) == 0
    assert mat.materialization.metadata["platform_commit"].value == "not a git checkout"


def test_make_bootstrap_and_make_root_first_then_gpuplat_makes_no_change(gp, seed):
    assert gp.materialize(["apis_enabled", "service_accounts", "cluster", "secrets_seeded"], env=ENV).success
    # make bootstrap: the fork's own install.sh (kube-target.sh, the argocd-redis secret, helm)
    out = run(["bash", str(seed.fork / "bootstrap/install.sh")], seed.env).stdout
    assert "Created argocd-redis auth secret" in out and "Argo CD 9.5.21 installed" in out
    assert make_root(seed) == ["appproject.argoproj.io/platform created",
                               "applicationset.argoproj.io/layer-platform created"]
    gp.admin.reset()
    result = gp.materialize(["argocd", "platform_installed"], env=ENV)
    assert result.success
    mats = {e.asset_key.path[-1]: e.materialization.metadata for e in result.get_asset_materialization_events()}
    assert {name: m["actions_applied"].value for name, m in mats.items()} == {"argocd": 0, "platform_installed": 0}
    assert mutations(gp, "kubernetes") == 0, gp.admin.calls()["kubernetes"]
    assert mats["argocd"]["observed"].value["release"] == "argo-cd argo-cd-9.5.21 rev 1"
    observed = mats["platform_installed"]["observed"].value
    assert observed["drifted_roots"] == {}
    apps = {a[0] for a in observed["apps"]}  # what Argo CD generated from the fork's groups and catalog
    assert {"group-platform-core", "group-identity", "external-secrets", "argo-cd", "dex"} <= apps, apps


def test_an_older_argo_cd_is_drift_shown_in_the_plan(gp, seed):
    assert gp.materialize(["apis_enabled", "service_accounts", "cluster"], env=ENV).success
    gp.admin.call("POST", "/sandbox/argocd/helm-install", {"cluster": CLUSTER, "release": "argo-cd",
                                                          "namespace": "argocd", "version": "9.1.4", "values": {}})
    result = gp.materialize(["argocd"], env=ENV, raise_on_error=False)
    plan = next(e for e in result.get_asset_materialization_events()).materialization.metadata["plan"].value
    assert "| update | Argo CD release argo-cd | chart version | 9.1.4 | 9.5.21 |" in plan
    assert "| update | Argo CD release argo-cd | values |" in plan


def test_seed_secrets_after_gpuplat_creates_nothing_and_gpuplat_after_it_neither(gp, seed, tmp_path):
    # The script runs in a git checkout of the fork (it cds to the repository root and writes secrets/ there).
    checkout = tmp_path / "fork"
    shutil.copytree(seed.fork, checkout)
    run(["git", "init", "-q"], seed.env, checkout)
    assert gp.materialize(["apis_enabled", "secrets_seeded"], env=ENV).success
    gp.admin.reset()
    out = run(["bash", "scripts/seed-secrets.sh"], seed.env, checkout).stdout
    assert "CREATED" not in out and out.count("EXISTS") == 15, out
    assert mutations(gp, "secretmanager") == 0

    # The other order, on a project the script seeded first.
    other = {**raw_config(seed), "cluster": {"name": "ai-dev", "projectID": "ai-lab-2", "location": "us-central1-a"}}
    gp.write(ENV, other)
    cfg = checkout / "environments" / ENV / "config.yaml"
    cfg.write_text(cfg.read_text().replace("projectID: ai-lab", "projectID: ai-lab-2"))
    assert gp.materialize(["apis_enabled"], env=ENV).success
    out = run(["bash", "scripts/seed-secrets.sh"], seed.env, checkout).stdout
    assert out.count("CREATED") == 15, out
    gp.admin.reset()
    result = gp.materialize(["secrets_seeded"], env=ENV)
    assert mutations(gp, "secretmanager") == 0
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks["internal_secrets_present"] and checks["dex_admin_hash_matches"], checks


def raw_config(seed) -> dict:
    return yaml.safe_load(seed.gp.platform.path(ENV).read_text())


def terraform_apply(gp, fork: Path) -> None:
    """What `make tf-apply` of the fork's infra/gke/terraform/main.tf asks of Google, with
    variables.tf's defaults, through the same APIs (Service Usage, IAM, Resource Manager, Artifact
    Registry, GKE v1): the required services, the node and ESO service accounts and their roles, the
    `models` repository with the nodes' reader grant, a cluster whose default pool is removed, the
    `default-pool` CPU pool and the `gpu-l4` pool, then ESO's Workload Identity binding."""
    import grpc
    from google.cloud import artifactregistry_v1, container_v1, iam_admin_v1, resourcemanager_v3, service_usage_v1
    from google.cloud.iam_admin_v1.services.iam.transports import IAMGrpcTransport

    from tests.conftest import client_options

    main_tf = (fork / "infra/gke/terraform/main.tf").read_text()
    assert 'remove_default_node_pool = true' in main_tf and '"ADVANCED_DATAPATH"' in main_tf  # the shape below
    urls = gp.admin.urls
    su = service_usage_v1.ServiceUsageClient(**client_options(urls, "serviceusage"))
    services = ["cloudbuild.googleapis.com", "compute.googleapis.com", "container.googleapis.com",
                "iamcredentials.googleapis.com", "artifactregistry.googleapis.com", "secretmanager.googleapis.com"]
    su.batch_enable_services(request={"parent": f"projects/{PROJECT}", "service_ids": services}).result(timeout=60)

    iam = iam_admin_v1.IAMClient(transport=IAMGrpcTransport(channel=grpc.insecure_channel(urls["iam_grpc"])))
    node_sa, eso_sa = f"gke-ai-dev-nodes@{PROJECT}.iam.gserviceaccount.com", f"external-secrets@{PROJECT}.iam.gserviceaccount.com"
    iam.create_service_account(name=f"projects/{PROJECT}", account_id="gke-ai-dev-nodes",
                               service_account=iam_admin_v1.ServiceAccount(display_name="GKE nodes for ai-dev"))
    iam.create_service_account(name=f"projects/{PROJECT}", account_id="external-secrets",
                               service_account=iam_admin_v1.ServiceAccount(display_name="External Secrets Operator"))
    rm = resourcemanager_v3.ProjectsClient(**client_options(urls, "cloudresourcemanager"))
    policy = rm.get_iam_policy(request={"resource": f"projects/{PROJECT}"})
    for role in ("roles/logging.logWriter", "roles/monitoring.metricWriter", "roles/monitoring.viewer",
                 "roles/stackdriver.resourceMetadata.writer"):  # google_project_iam_member.node_roles
        policy.bindings.add(role=role, members=[f"serviceAccount:{node_sa}"])
    policy.bindings.add(role="roles/secretmanager.secretAccessor", members=[f"serviceAccount:{eso_sa}"])
    rm.set_iam_policy(request={"resource": f"projects/{PROJECT}", "policy": policy})
    ar = artifactregistry_v1.ArtifactRegistryClient(**client_options(urls, "artifactregistry"))
    ar.create_repository(parent=f"projects/{PROJECT}/locations/us-central1", repository_id="models",
                         repository=artifactregistry_v1.Repository(
                             format_=artifactregistry_v1.Repository.Format.DOCKER,
                             description="OCI modelcars for KServe")).result(timeout=60)
    repo = f"projects/{PROJECT}/locations/us-central1/repositories/models"
    repo_policy = ar.get_iam_policy(request={"resource": repo})
    repo_policy.bindings.add(role="roles/artifactregistry.reader", members=[f"serviceAccount:{node_sa}"])
    ar.set_iam_policy(request={"resource": repo, "policy": repo_policy})

    gke = container_v1.ClusterManagerClient(**client_options(urls, "container"))
    parent = f"projects/{PROJECT}/locations/us-central1-a"

    def done(op):
        while op.status != container_v1.Operation.Status.DONE:
            op = gke.get_operation(name=f"{parent}/operations/{op.name}")
        assert not op.error.message, op.error.message

    common = dict(oauth_scopes=["https://www.googleapis.com/auth/cloud-platform"], service_account=node_sa,
                  metadata={"disable-legacy-endpoints": "true"},
                  workload_metadata_config=container_v1.WorkloadMetadataConfig(
                      mode=container_v1.WorkloadMetadataConfig.Mode.GKE_METADATA))
    done(gke.create_cluster(parent=parent, cluster=container_v1.Cluster(
        name="ai-dev", initial_node_count=1,
        release_channel=container_v1.ReleaseChannel(channel=container_v1.ReleaseChannel.Channel.REGULAR),
        workload_identity_config=container_v1.WorkloadIdentityConfig(workload_pool=f"{PROJECT}.svc.id.goog"),
        ip_allocation_policy=container_v1.IPAllocationPolicy(use_ip_aliases=True),
        network_config=container_v1.NetworkConfig(datapath_provider=container_v1.DatapathProvider.ADVANCED_DATAPATH))))
    done(gke.delete_node_pool(name=f"{parent}/clusters/ai-dev/nodePools/default-pool"))  # remove_default_node_pool
    management = container_v1.NodeManagement(auto_repair=True, auto_upgrade=True)
    done(gke.create_node_pool(parent=f"{parent}/clusters/ai-dev", node_pool=container_v1.NodePool(
        name="default-pool", initial_node_count=1, management=management,
        autoscaling=container_v1.NodePoolAutoscaling(enabled=True, min_node_count=1, max_node_count=3),
        config=container_v1.NodeConfig(machine_type="e2-standard-4", **common))))
    done(gke.create_node_pool(parent=f"{parent}/clusters/ai-dev", node_pool=container_v1.NodePool(
        name="gpu-l4", initial_node_count=0, management=management,
        autoscaling=container_v1.NodePoolAutoscaling(enabled=True, min_node_count=0, max_node_count=1),
        config=container_v1.NodeConfig(
            machine_type="g2-standard-4", disk_size_gb=100, image_type="COS_CONTAINERD",
            accelerators=[container_v1.AcceleratorConfig(
                accelerator_count=1, accelerator_type="nvidia-l4",
                gpu_driver_installation_config=container_v1.GPUDriverInstallationConfig(
                    gpu_driver_version=container_v1.GPUDriverInstallationConfig.GPUDriverVersion.DEFAULT))],
            taints=[container_v1.NodeTaint(key="nvidia.com/gpu", value="present",
                                           effect=container_v1.NodeTaint.Effect.NO_SCHEDULE)], **common))))
    # google_service_account_iam_member.external_secrets_workload_identity (depends_on the cluster)
    sa_policy = iam.get_iam_policy(request={"resource": f"projects/{PROJECT}/serviceAccounts/{eso_sa}"})
    sa_policy.bindings.add(role="roles/iam.workloadIdentityUser",
                           members=[f"serviceAccount:{PROJECT}.svc.id.goog[external-secrets/external-secrets]"])
    iam.set_iam_policy(request={"resource": f"projects/{PROJECT}/serviceAccounts/{eso_sa}", "policy": sa_policy})


def test_a_substrate_terraform_built_is_adopted_with_no_mutating_call(gp, seed):
    """The fork's Terraform does not enable cloudbilling.googleapis.com: gpuplat adopts the project as it
    is, and its running cost says how to enable the catalog's API instead of enabling it."""
    terraform_apply(gp, seed.fork)
    gp.admin.reset()
    built = ["apis_enabled", "service_accounts", "cluster", "workload_identity", "gpu_pool", "model_registry"]
    result = gp.materialize(built, env=ENV)
    assert result.success
    calls = gp.admin.calls()
    assert calls["_total"]["mutate"] == 0, {api: c["methods"] for api, c in calls.items() if api != "_total"}
    for mat in result.get_asset_materialization_events():
        assert mat.materialization.metadata["actions_applied"].value == 0, mat.asset_key
    cost = result.asset_materializations_for_node("cluster")[0].metadata["cost_unknown"].value
    assert "cloudbilling.googleapis.com is not enabled" in cost and "gcloud services enable" in cost