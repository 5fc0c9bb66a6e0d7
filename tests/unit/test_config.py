"""Bad config never reaches an API: one message naming the file, the key path, the value and what is allowed."""

from __future__ import annotations

import re

import pytest

from substrate.config import ConfigError, parse_config
from substrate.environments import load_environment, load_environments

PATH = "environments/e/config.yaml"
GOOD = {"cluster": {"name": "ai-dev", "projectID": "p"}}


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
    pytest.param({"cluster": {"name": "ai-dev"}}, "cluster.projectID", "(missing)", "a GCP project id",
                 id="a missing project on GKE is refused"),
    pytest.param({"cluster": {"projectID": "p"}}, "cluster.name", "(missing)", "the cluster's name (required",
                 id="a missing cluster name is refused, never defaulted to another environment's cluster"),
    pytest.param({}, "cluster", "(missing)", "a mapping with name, projectID and location (required)",
                 id="a missing cluster block is refused"),
    pytest.param({"cluster": {"name": "AI_dev", "projectID": "p"}}, "cluster.name", "'AI_dev'",
                 "lowercase letters, digits and hyphens", id="a cluster name GKE would refuse is refused first"),
    pytest.param({"cluster": {"name": "ai-dev", "projectID": "p", "location": "us-central-1a"}}, "cluster.location",
                 "'us-central-1a'", "a GCP zone such as us-central1-a or a region such as us-central1",
                 id="a location that is no GCP zone or region is refused before any call"),
    pytest.param({**GOOD, "secret_backend": "gcpms"}, "secret_backend", "'gcpms'", "one of gcpsm, aws-sm",
                 id="a typo'd secret backend lists the allowed ones instead of becoming an external backend"),
    pytest.param({**GOOD, "substrate": {"kind": "aws"}}, "substrate.kind", "'aws'", "'gke', 'hetzner' or 'byo'",
                 id="an unknown substrate kind is refused"),
    pytest.param({**GOOD, "lifecycle": "pause"}, "lifecycle", "'pause'", "'running' or 'paused'",
                 id="a lifecycle typo is refused, never read as running"),
    pytest.param({**GOOD, "lifecycle": "paused", "gpu_stack": "none", "substrate": {"kind": "byo"}}, "lifecycle",
                 "'paused'", "running on byo", id="only a GKE substrate gpuplat created can be paused"),
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
    for name, text in {"good": "cluster: {name: a, projectID: p}\n", "broken": "cluster: {name: b, projectID: p}\nprofile: staging\n"}.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.yaml").write_text(text)
    envs = load_environments(tmp_path)
    assert envs.names == ["broken", "good"]
    assert list(envs.configs) == ["good"]
    assert "profile" in envs.errors["broken"] and str(tmp_path / "broken" / "config.yaml") in envs.errors["broken"]


def test_the_shipped_sandbox_environment_is_valid():
    envs = load_environments()
    assert "sandbox" in envs.configs, envs.errors


def write_env(root, name: str, content: bytes | str | None) -> None:
    folder = root / name
    folder.mkdir()
    if content is None:
        (folder / "config.yaml").mkdir()
    else:
        (folder / "config.yaml").write_bytes(content.encode() if isinstance(content, str) else content)


BAD_FILES = [
    pytest.param(b"cluster:\n  name: caf\xe9\n", "line 2: byte 0xe9 is not UTF-8; allowed: UTF-8 text",
                 id="non-UTF-8 bytes name their line"),
    pytest.param(None, "(file): is a directory, not a file; allowed: a YAML file named config.yaml",
                 id="a config.yaml that is a directory"),
    pytest.param("", "(file): the file is empty; allowed: a YAML mapping", id="an empty file"),
    pytest.param("\n  \n", "(file): the file is empty", id="a file of blank lines is empty too"),
    pytest.param("cluster:\n  name: a\n  projectID: p\n  name: b\n",
                 "cluster.name: defined twice (line 2 and line 4); allowed: each key once per mapping",
                 id="a duplicate key is refused, not silently last-one-wins"),
    pytest.param("cluster:\n  name: [unclosed\nprofile: dev\n", "line 2: while parsing a flow sequence",
                 id="an unclosed bracket is reported on the line that opens it"),
    pytest.param("cluster:\n  name: a: b\n", "line 2: mapping values are not allowed here; allowed: valid YAML",
                 id="a YAML syntax error names its own line"),
    pytest.param("- a\n- b\n", "(top level): 'list' is not allowed; allowed: a mapping of keys to values",
                 id="a list instead of a mapping"),
]


@pytest.mark.parametrize("content, expected", BAD_FILES)
def test_a_bad_file_gets_one_line_naming_file_and_line(tmp_path, content, expected):
    write_env(tmp_path, "bad", content)
    write_env(tmp_path, "good", "cluster: {name: good, projectID: p}\n")
    envs = load_environments(tmp_path)  # never raises: a broken environment leaves the others loadable
    assert list(envs.configs) == ["good"]
    msg = envs.errors["bad"]
    assert msg.startswith(f"{tmp_path / 'bad' / 'config.yaml'}: ")
    assert expected in msg
    assert "\n" not in msg and "Traceback" not in msg
    with pytest.raises(ConfigError) as err:
        load_environment("bad", tmp_path)
    assert str(err.value) == msg


def test_an_unknown_environment_says_where_environments_are_looked_up(tmp_path):
    write_env(tmp_path, "alpha", "cluster: {name: a, projectID: p}\n")
    write_env(tmp_path, "beta", "cluster: {name: b, projectID: p}\n")
    with pytest.raises(ConfigError) as err:
        load_environment("gamma", tmp_path)
    msg = str(err.value)
    assert msg == (f"{tmp_path / 'gamma' / 'config.yaml'}: (file): no environment named 'gamma'; allowed: one of the "
                   f"environments under {tmp_path.resolve()} (GPUPLAT_ENVIRONMENTS): alpha, beta")


DOUBLED = re.compile(r"\b(\w+)(:?) \1\2(?=\W)", re.IGNORECASE)


def every_message(tmp_path) -> list[str]:
    out = []
    for param in BAD_FILES:
        content, _ = param.values
        root = tmp_path / param.id.replace(" ", "-").replace("'", "")
        root.mkdir()
        write_env(root, "bad", content)
        out.extend(load_environments(root).errors.values())
    for param in test_bad_config_gets_one_clear_message.pytestmark[0].args[1]:
        with pytest.raises(ConfigError) as err:
            parse_config("e", PATH, param.values[0])
        out.append(str(err.value))
    return out


def test_no_message_doubles_a_word(tmp_path):
    """ "allowed: allowed:" and the like: a message that stutters reads as a bug."""
    messages = every_message(tmp_path)
    assert len(messages) > 15
    stutters = [m for m in messages if DOUBLED.search(m)]
    assert not stutters
