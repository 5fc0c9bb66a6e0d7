"""Bad config never reaches an API: one message naming the file, the key path, the value and what is allowed."""

from __future__ import annotations

import pytest

from gpuplat_assets.config import ConfigError, load_environments, parse_config

PATH = "environments/e/config.yaml"
GOOD = {"cluster": {"projectID": "p"}}


@pytest.mark.parametrize("raw, key, value_text, allowed_text", [
    pytest.param({**GOOD, "substrat": {}}, "substrat", "{}", "one of the known keys: cluster", id="a typo'd top-level key is named"),
    pytest.param({**GOOD, "substrate": {"gpu_pool": {"mx": 1}}}, "substrate.gpu_pool.mx", "1", "max, min",
                 id="a typo'd nested key is named with its path"),
    pytest.param({**GOOD, "profile": "staging"}, "profile", "'staging'", "'cost', 'dev' or 'prod'",
                 id="a wrong enum value lists the allowed values"),
    pytest.param({**GOOD, "substrate": {"gpu_pool": {"min": 2, "max": 1}}}, "substrate.gpu_pool.min", "2",
                 "0 <= min <= max (max is 1)", id="a GPU pool with min above max is refused"),
    pytest.param({**GOOD, "gpu_stack": "operator"}, "gpu_stack", "'operator'", "cannot register with GKE's containerd",
                 id="the GPU operator on GKE is refused with the reason"),
    pytest.param({}, "cluster.projectID", "(missing)", "a GCP project id", id="a missing project on GKE is refused"),
    pytest.param({**GOOD, "substrate": {"kind": "aws"}}, "substrate.kind", "'aws'", "'gke', 'hetzner' or 'byo'",
                 id="an unknown substrate kind is refused"),
])
def test_bad_config_gets_one_clear_message(raw, key, value_text, allowed_text):
    with pytest.raises(ConfigError) as err:
        parse_config("e", PATH, raw)
    msg = str(err.value)
    assert msg.startswith(f"{PATH}: {key}: {value_text} is not allowed; allowed: ")
    assert allowed_text in msg
    assert "\n" not in msg


def test_defaults_follow_the_seed():
    env = parse_config("e", PATH, GOOD)
    assert (env.cluster.name, env.cluster.location, env.region) == ("ai-dev", "us-central1-a", "us-central1")
    cpu, gpu = env.substrate.cpu_pool, env.substrate.gpu_pool
    assert (cpu.machine_type, cpu.min, cpu.max) == ("e2-standard-4", 1, 3)
    assert (gpu.name, gpu.machine_type, gpu.accelerator_type, gpu.accelerator_count, gpu.min, gpu.max,
            gpu.disk_size_gb) == ("gpu-l4", "g2-standard-4", "nvidia-l4", 1, 0, 1, 100)


@pytest.mark.parametrize("profile, remediation", [("prod", "report"), ("dev", "auto"), ("cost", "auto")])
def test_remediation_defaults_to_report_on_prod(profile, remediation):
    assert parse_config("e", PATH, {**GOOD, "profile": profile}).remediation == remediation


def test_invalid_yaml_names_the_line(tmp_path):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.yaml").write_text("cluster:\n  name: [unclosed\n")
    envs = load_environments(tmp_path)
    assert "bad" in envs.errors and "line" in envs.errors["bad"] and "valid YAML" in envs.errors["bad"]


def test_a_broken_environment_does_not_hide_the_healthy_ones(tmp_path):
    for name, text in {"good": "cluster: {projectID: p}\n", "broken": "cluster: {projectID: p}\nprofile: staging\n"}.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.yaml").write_text(text)
    envs = load_environments(tmp_path)
    assert envs.names == ["broken", "good"]
    assert list(envs.configs) == ["good"]
    assert "profile" in envs.errors["broken"] and str(tmp_path / "broken" / "config.yaml") in envs.errors["broken"]


def test_the_shipped_sandbox_environment_is_valid():
    envs = load_environments()
    assert "sandbox" in envs.configs, envs.errors
