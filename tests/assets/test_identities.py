"""GKE identities and the model registry on the sandbox: built like the fork's Terraform, others'
IAM bindings kept, a concurrent policy change retried, the caller's permissions measured."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from google.cloud import resourcemanager_v3

from tests.conftest import ROOT, client_options

PROJECT = "gpuplat-test"
NODE_SA = f"gke-ai-dev-nodes@{PROJECT}.iam.gserviceaccount.com"
ESO_SA = f"external-secrets@{PROJECT}.iam.gserviceaccount.com"
GUIDE = ROOT / "docs" / "guide-gke.md"


def gcloud(gp, *args: str) -> str:
    """The real gcloud, with the configuration the sandbox writes (skipped where gcloud is absent)."""
    if shutil.which("gcloud") is None:
        pytest.skip("gcloud is not on PATH (the machine image and CI have it)")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLOUDSDK_", "GOOGLE_"))}
    env.update(CLOUDSDK_CONFIG=str(Path(gp.sandbox.state_dir) / "gcloud"), CLOUDSDK_CORE_PROJECT=PROJECT)
    done = subprocess.run(["gcloud", *args], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def project_policy(gp) -> dict[str, set[str]]:
    rm = resourcemanager_v3.ProjectsClient(**client_options(gp.admin.urls, "cloudresourcemanager"))
    return {b.role: set(b.members) for b in rm.get_iam_policy(request={"resource": f"projects/{PROJECT}"}).bindings}


def test_the_chain_eso_needs_is_built_and_checked_end_to_end(gp):
    result = gp.materialize()
    assert result.success
    policy = project_policy(gp)
    assert {"roles/logging.logWriter", "roles/monitoring.metricWriter", "roles/monitoring.viewer",
            "roles/stackdriver.resourceMetadata.writer"} <= {r for r, m in policy.items() if f"serviceAccount:{NODE_SA}" in m}
    assert f"serviceAccount:{ESO_SA}" in policy["roles/secretmanager.secretAccessor"]
    checks = gp.checks(result)
    assert checks[("platform_installed", "secret_store_ready")] and checks[("model_registry", "nodes_can_pull_models")]
    # The checks job, once the platform is in: ESO's own verdict is part of the chain.
    evaluations = {e.check_name: e for e in gp.drift_checks().get_asset_check_evaluations()}
    eso = evaluations["eso_can_read_secrets"]
    assert eso.passed and "ClusterSecretStore secret-store Ready" in eso.description
    # What the fork's Terraform would have made, as gcloud lists it.
    accounts = gcloud(gp, "iam", "service-accounts", "list", "--format=value(email)").split()
    assert sorted(accounts) == [ESO_SA, NODE_SA]
    bindings = gcloud(gp, "projects", "get-iam-policy", PROJECT, "--format=json")
    assert f"serviceAccount:{NODE_SA}" in bindings and '"roles/secretmanager.secretAccessor"' in bindings
    wi = gcloud(gp, "iam", "service-accounts", "get-iam-policy", ESO_SA, "--format=json")
    assert f"serviceAccount:{PROJECT}.svc.id.goog[external-secrets/external-secrets]" in wi
    repos = gcloud(gp, "artifacts", "repositories", "list", "--location", "us-central1",
                   "--format=value(name,format)")
    assert repos.split() == ["models", "DOCKER"]


def test_someone_elses_bindings_survive_and_a_removed_member_of_ours_is_drift(gp):
    from google.cloud import resourcemanager_v3 as rm3

    rm = rm3.ProjectsClient(**client_options(gp.admin.urls, "cloudresourcemanager"))
    policy = rm.get_iam_policy(request={"resource": f"projects/{PROJECT}"})
    policy.bindings.add(role="roles/viewer", members=["user:auditor@example.com"])
    rm.set_iam_policy(request={"resource": f"projects/{PROJECT}", "policy": policy})
    assert gp.materialize().success
    # Someone removes one of gpuplat's members, and adds their own to the same role.
    policy = rm.get_iam_policy(request={"resource": f"projects/{PROJECT}"})
    for b in policy.bindings:
        if b.role == "roles/monitoring.viewer":
            b.members.remove(f"serviceAccount:{NODE_SA}")
            b.members.append("user:ops@example.com")
    rm.set_iam_policy(request={"resource": f"projects/{PROJECT}", "policy": policy})
    checks = {e.check_name: e for e in gp.drift_checks().get_asset_check_evaluations()
              if e.asset_key.path == ["service_accounts"]}
    assert not checks["in_sync"].passed and "roles/monitoring.viewer" in checks["in_sync"].description
    assert gp.materialize(["service_accounts"]).success
    after = project_policy(gp)
    assert after["roles/viewer"] >= {"user:auditor@example.com"}
    assert after["roles/monitoring.viewer"] == {f"serviceAccount:{NODE_SA}", "user:ops@example.com"}
    assert after["roles/owner"] == {"user:owner@example.com"}  # the project's own, never rewritten


def test_a_concurrent_policy_change_is_read_again_and_loses_nobody(gp):
    assert gp.materialize(["apis_enabled"]).success
    gp.admin.fault("cloudresourcemanager", "SetIamPolicy", "concurrent-change", count=2)
    result = gp.materialize(["service_accounts"])
    assert result.success
    methods = gp.admin.calls()["cloudresourcemanager"]["methods"]
    assert methods["SetIamPolicy"] == 3 and methods["GetIamPolicy"] >= 4  # two lost races, then the write
    policy = project_policy(gp)
    writers = {m for m in policy.get("roles/viewer", set()) if m.startswith("user:concurrent-writer-")}
    assert len(writers) == 2  # both concurrent writers' bindings are still there
    assert f"serviceAccount:{ESO_SA}" in policy["roles/secretmanager.secretAccessor"]


def test_a_second_materialization_of_the_identities_changes_nothing(gp):
    assert gp.materialize().success
    gp.admin.reset()
    assert gp.materialize(["service_accounts", "workload_identity", "model_registry"]).success
    calls = gp.admin.calls()
    assert calls["_total"]["mutate"] == 0, calls


def documented_methods() -> set[str]:
    """The `api.Method` cells of the first caller-permissions table in docs/guide-gke.md (what a first run
    calls; the second table lists what only repairs and pauses call, and tests/unit/test_docs.py checks
    that every call the code makes is in one of them)."""
    text = GUIDE.read_text()
    section = text[text.index("## Permissions the caller needs"):]
    section = section[:section.index("\nLater runs and sensor ticks call these too")]
    return set(re.findall(r"^\| `([a-z]+\.[A-Za-z]+)` \|", section, re.M))


def test_the_permissions_the_guide_lists_are_the_methods_a_first_run_calls(gp):
    # Each test's sandbox starts empty: this is a first run on a blank project, then the drift checks.
    gp.admin.reset()
    assert gp.materialize().success
    gp.drift_checks()
    called = {f"{api}.{method}" for api, entry in gp.admin.calls().items()
              if api not in ("_total", "kubernetes", "oauth2") for method in entry["methods"]}
    assert called == documented_methods(), (sorted(called - documented_methods()), sorted(documented_methods() - called))
