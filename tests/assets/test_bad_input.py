"""A broken environment: one line naming file, key path, value and what is allowed; no API call; the other
environments still materialize; on the command line the line comes first and last."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from tests.unit.test_config import BAD_FILES

GOOD_BUT = "cluster: {name: ai-dev, projectID: gpuplat-test}\nsubstrate: {kind: gke, sandbox: true}\n"
BAD_CONFIGS = [pytest.param(content, expected, id=param_id) for content, expected, param_id in (
    *((p.values[0], p.values[1], p.id) for p in BAD_FILES if p.values[0] is not None),
    (GOOD_BUT + "secret_backend: gcpms\n", "secret_backend: 'gcpms' is not allowed", "a typo'd secret backend"),
    ("cluster: {projectID: gpuplat-test}\nsubstrate: {kind: gke, sandbox: true}\n", "cluster.name: (missing)",
     "no cluster name"),
    ("cluster: {name: ai-dev, projectID: gpuplat-test, location: us-central-1}\nsubstrate: {kind: gke, sandbox: true}\n",
     "cluster.location: 'us-central-1' is not allowed", "a location that is no GCP location"),
)]


def write_broken(platform, content) -> None:
    path = platform.write("broken", "")
    path.write_bytes(content if isinstance(content, bytes) else content.encode())


@pytest.mark.parametrize("content, expected", BAD_CONFIGS)
def test_each_bad_input_is_one_line_no_call_and_the_others_still_materialize(gp, content, expected):
    write_broken(gp.platform, content)
    gp.add_partition("broken")
    gp.admin.reset()
    broken = gp.materialize(select=["apis_enabled", "service_accounts", "cluster"], env="broken", raise_on_error=False)
    assert not broken.success
    failure = next(e for e in broken.all_events if e.event_type_value == "STEP_FAILURE")
    message = failure.event_specific_data.error.message
    description = message.split(": ", 1)[1].strip()  # "dagster._core...Failure: <description>"
    assert expected in description and "\n" not in description, description
    assert str(gp.platform.path("broken")) in description
    assert gp.admin.calls()["_total"] == {"read": 0, "mutate": 0}
    assert gp.materialize(select=["apis_enabled"]).success


def test_a_config_yaml_that_is_a_directory_breaks_nothing_else(gp):
    path = gp.platform.path("broken")
    path.mkdir(parents=True)
    from substrate.environments import load_environments
    envs = load_environments(gp.platform.envs)
    assert "is a directory, not a file" in envs.errors["broken"]
    assert gp.materialize(select=["apis_enabled"]).success


@pytest.mark.parametrize("partition, expected", [
    ("broken", "secret_backend: 'gcpms' is not allowed"),
    ("nowhere", "no environment named 'nowhere'; allowed: one of the environments under"),
])
def test_on_the_command_line_the_message_is_the_first_and_the_last_line(sandbox_process, tmp_path, platform, partition,
                                                                       expected):
    urls = sandbox_process.start()
    write_broken(platform, GOOD_BUT + "secret_backend: gcpms\n")
    home = tmp_path / "dagster_home"
    home.mkdir()
    env = {**os.environ, "GPUPLAT_ENVIRONMENTS": str(platform.envs), "PYTHONPATH": str(ROOT),
           "GPUPLAT_SANDBOX_DIR": str(sandbox_process.state_dir), "DAGSTER_HOME": str(home)}
    done = subprocess.run([sys.executable, "-m", "dagster", "asset", "materialize", "-m", "gpuplat_assets",
                           "--select", "apis_enabled", "--partition", partition],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    ours = [i for i, line in enumerate(lines) if line.startswith("gpuplat: ")]
    assert ours and ours[-1] == len(lines) - 1 and expected in lines[-1]
    assert all(lines[i] == lines[-1] for i in ours), [lines[i] for i in ours]
    # First: no error, traceback or stack trace comes before it (only Dagster's notices of a starting run).
    before = "\n".join(lines[:ours[0]])
    assert not any(word in before for word in ("ERROR", "Traceback", "Stack Trace", "Error:")), before[-2000:]
    from tests.conftest import admin
    assert admin(urls, "GET", "/sandbox/calls")["_total"] == {"read": 0, "mutate": 0}


@pytest.mark.parametrize("pod_zone, profile, zone, refused", [
    ("dev", "prod", "", True),     # a prod environment on a dev run pod: refused
    ("prod", "dev", "", True),     # and the other way round
    ("dev", "dev", "", False),
    ("prod", "prod", "", False),
    ("lab", "dev", "lab", False),  # a zone the config names
    ("dev", "dev", "lab", True),
])
def test_a_run_pod_of_another_trust_zone_refuses_the_environment_before_any_call(gp, monkeypatch, pod_zone,
                                                                                    profile, zone, refused):
    """gpuplat_deploy.launcher gives each run pod its zone's identity and names the zone in GPUPLAT_TRUST_ZONE;
    a pattern that sends an environment to the wrong zone's pod fails here, in one line, with no call."""
    gp.configure(profile=profile, substrate={"trust_zone": zone} if zone else {})
    monkeypatch.setenv("GPUPLAT_TRUST_ZONE", pod_zone)
    gp.admin.reset()
    result = gp.materialize(select=["apis_enabled"], raise_on_error=False)
    if not refused:
        assert result.success
        return
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    description = failure.event_specific_data.error.message.split(": ", 1)[1].strip()
    expected_zone = zone or ("prod" if profile == "prod" else "dev")
    assert (f"substrate.trust_zone: environment 'sandbox' is in trust zone {expected_zone!r}, but this run holds "
            f"the credentials of zone {pod_zone!r}") in description, description
    assert "\n" not in description and str(gp.platform.path("sandbox")) in description
    assert gp.admin.calls()["_total"] == {"read": 0, "mutate": 0}
