"""A private fork: Argo CD's repository credential from the secret backend (the seed's `make argocd-repo`)."""

from __future__ import annotations

import base64

from kubernetes import client
from google.cloud import secretmanager_v1

from tests.conftest import client_options, kube_api

TOKEN = "github_pat_11AAAAAAA0fakefakefakefake"
REPO = "https://github.com/example/gpu-inference-platform"


def repo_secrets(gp) -> list:
    api = client.CoreV1Api(kube_api(gp.admin.urls, gp.tmp_path, "projects/gpuplat-test/locations/us-central1-a/"
                                                                 "clusters/ai-dev"))
    return api.list_namespaced_secret("argocd", label_selector="argocd.argoproj.io/secret-type=repository").items


def test_the_token_is_stored_once_from_the_environment_and_written_where_argo_cd_reads_it(gp, monkeypatch, capfd):
    gp.configure(substrate={"private_repo": {"secret": "argocd-repo-pat"}})
    monkeypatch.setenv("ARGOCD_REPO_PAT", TOKEN)
    result = gp.materialize()
    assert result.success
    sm = secretmanager_v1.SecretManagerServiceClient(**client_options(gp.admin.urls, "secretmanager"))
    stored = sm.access_secret_version(name="projects/gpuplat-test/secrets/argocd-repo-pat/versions/latest")
    assert stored.payload.data.decode() == TOKEN
    [secret] = repo_secrets(gp)
    data = {k: base64.b64decode(v).decode() for k, v in secret.data.items()}
    assert data == {"type": "git", "url": REPO, "username": "git", "password": TOKEN}
    out, err = capfd.readouterr()
    logs = "\n".join(str(e) for r in gp.instance.get_runs() for e in gp.instance.all_logs(r.run_id))
    assert TOKEN not in out + err + logs and TOKEN[:16] not in out + err + logs
    assert "Argo CD repository Secret" in logs  # the step is named, its value never

    # The environment variable is read once: later runs take the token from the backend.
    monkeypatch.delenv("ARGOCD_REPO_PAT")
    gp.admin.reset()
    again = gp.materialize(["platform_installed"])
    assert again.success and gp.admin.calls()["_total"]["mutate"] == 0
    # A rotated token in the backend is written over the old one.
    sm.add_secret_version(parent="projects/gpuplat-test/secrets/argocd-repo-pat",
                          payload=secretmanager_v1.SecretPayload(data=b"github_pat_rotated"))
    rotated = gp.materialize(["platform_installed"])
    plan = rotated.asset_materializations_for_node("platform_installed")[0].metadata["plan"].value
    assert "| update | Argo CD repository Secret platform-repo | password |" in plan and "rotated" not in plan
    assert base64.b64decode(repo_secrets(gp)[0].data["password"]).decode() == "github_pat_rotated"


def test_without_a_token_anywhere_the_plan_says_how_to_give_one(gp, monkeypatch):
    gp.configure(substrate={"private_repo": {"secret": "argocd-repo-pat"}})
    monkeypatch.delenv("ARGOCD_REPO_PAT", raising=False)
    result = gp.materialize(["apis_enabled", "service_accounts", "cluster", "workload_identity", "argocd", "platform_installed"], raise_on_error=False)
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    message = failure.event_specific_data.error.message
    assert "Argo CD repository Secret platform-repo" in message and "export ARGOCD_REPO_PAT=<token>" in message
