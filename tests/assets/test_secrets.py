"""secrets_seeded on the sandbox's Secret Manager: whole secrets, the Dex pair that never disagrees.

Real behaviour reproduced: Secret Manager's `latest` alias resolves to the newest ENABLED version
and a secret with no enabled version has nothing to access (404 "not found or has no versions"),
https://cloud.google.com/secret-manager/docs/access-secret-version ; versions are listed newest first
and filtered with `state:ENABLED` (https://cloud.google.com/secret-manager/docs/filtering).
"""

from __future__ import annotations

import os
import subprocess
import sys

import bcrypt
import pytest
from google.cloud import secretmanager_v1

from tests.assets.conftest import dagster_home
from tests.conftest import ROOT, client_options

PARENT = "projects/gpuplat-test"


def sm(gp) -> secretmanager_v1.SecretManagerServiceClient:
    return secretmanager_v1.SecretManagerServiceClient(**client_options(gp.sandbox, "secretmanager"))


def latest(client, secret_id: str) -> bytes:
    return client.access_secret_version(name=f"{PARENT}/secrets/{secret_id}/versions/latest").payload.data


def test_a_secret_left_without_a_version_is_repaired_and_fails_the_check_until_then(gp):
    client = sm(gp)
    assert gp.materialize(select=["apis_enabled"]).success  # Secret Manager answers SERVICE_DISABLED before
    # A run killed between create and add-version left this behind.
    client.create_secret(parent=PARENT, secret_id="litellm-master-key", secret=secretmanager_v1.Secret(
        replication=secretmanager_v1.Replication(automatic=secretmanager_v1.Replication.Automatic())))
    checks = gp.drift_checks(raise_on_error=False)
    present = next(e for e in checks.get_asset_check_evaluations() if e.check_name == "internal_secrets_present")
    assert not present.passed
    assert "litellm-master-key" in present.metadata["without_enabled_version"].value
    result = gp.materialize(select=["apis_enabled", "secrets_seeded"])
    assert result.success
    assert len(latest(client, "litellm-master-key")) == 64
    assert gp.checks(result)[("secrets_seeded", "internal_secrets_present")]
    # A version disabled by hand is just as unreadable: the next run adds one, never re-enables or deletes.
    (version,) = client.list_secret_versions(parent=f"{PARENT}/secrets/vllm-api-key")
    client.disable_secret_version(name=version.name)
    plan = gp.materialize(select=["secrets_seeded"]).asset_materializations_for_node("secrets_seeded")[0]
    assert "| update | secret vllm-api-key | version |" in plan.metadata["plan"].value
    states = [v.state.name for v in client.list_secret_versions(parent=f"{PARENT}/secrets/vllm-api-key")]
    assert states == ["ENABLED", "DISABLED"]


@pytest.mark.slow
def test_two_concurrent_first_runs_leave_a_dex_hash_that_verifies_the_password(gp, tmp_path):
    """Two `dagster asset materialize` processes race on a blank project; the stored pair must agree."""
    assert gp.materialize(select=["apis_enabled"]).success
    home = dagster_home(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "GPUPLAT_SANDBOX_DIR": str(gp.sandbox.state_dir),
           "GPUPLAT_ENVIRONMENTS": str(gp.platform.envs), "DAGSTER_HOME": str(home)}
    procs = [subprocess.Popen([sys.executable, "-m", "dagster", "asset", "materialize", "-m", "gpuplat_assets",
                               "--select", "secrets_seeded", "--partition", "sandbox"], cwd=tmp_path, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=180)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    client = sm(gp)
    password, hashed = latest(client, "dex-admin-password"), latest(client, "dex-admin-hash")
    assert len(password) == 32 and hashed.startswith(b"$2a$10$")
    assert bcrypt.checkpw(password, hashed)
    checks = gp.drift_checks(raise_on_error=False)
    assert all(e.passed for e in checks.get_asset_check_evaluations()
               if e.asset_key.path[-1] == "secrets_seeded" and e.check_name != "external_secrets_present")


def test_a_hash_that_does_not_verify_the_password_fails_the_check_and_is_derived_again(gp):
    assert gp.materialize(select=["apis_enabled", "secrets_seeded"]).success
    client = sm(gp)
    client.add_secret_version(parent=f"{PARENT}/secrets/dex-admin-hash",
                              payload={"data": bcrypt.hashpw(b"someone-else", bcrypt.gensalt(4))})
    checks = gp.drift_checks(raise_on_error=False)
    match = next(e for e in checks.get_asset_check_evaluations() if e.check_name == "dex_admin_hash_matches")
    assert not match.passed and "does not verify" in match.description
    password = latest(client, "dex-admin-password")
    assert password.decode() not in str(match.metadata) and password.decode() not in match.description
    assert gp.materialize(select=["secrets_seeded"]).success
    assert latest(client, "dex-admin-password") == password  # the password is never rotated
    assert bcrypt.checkpw(password, latest(client, "dex-admin-hash"))
