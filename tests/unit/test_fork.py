"""Reading the platform fork: the seed's own files (`platform_fork`, skipped without one) and the
project's example tree, as gpuplat's desired state."""

from __future__ import annotations

import subprocess

import pytest
import yaml

from substrate import argocd, fork, platform_installed, secrets_seeded
from substrate.config import ConfigError, parse_config
from substrate.fork import LAYERS, SEED_SECRET_DEFAULTS, Fork, repo_of
from resources.kube import LAST_APPLIED, go_json, with_last_applied
from tests.platform_tree import example_platform

SEED_URL = "https://github.com/ahmedwaleedmalik/k8s-llm-inference-platform.git"
EXAMPLE_URL = "https://github.com/example/gpu-inference-platform"


def env_in(root, name="e", **over):
    """An environment whose config sits in `root`/environments/`name`/ (so `root` is its fork)."""
    raw = {"cluster": {"name": "ai-dev", "projectID": "proj"}, "repoURL": EXAMPLE_URL}
    raw.update(over)
    path = root / "environments" / name / "config.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(raw))
    return parse_config(name, str(path), raw)


def seed_env(fork_path, **over):
    """The seed's ai-dev environment, read where the fork keeps it."""
    raw = yaml.safe_load((fork_path / "environments" / "ai-dev" / "config.yaml").read_text())
    raw.update(over)
    return parse_config("ai-dev", str(fork_path / "environments" / "ai-dev" / "config.yaml"), raw)


# ---- where the fork is ----------------------------------------------------------------------------
def test_the_fork_is_the_repository_holding_environments_unless_the_config_names_one(tmp_path):
    assert repo_of(env_in(tmp_path)) == tmp_path.resolve()
    assert repo_of(env_in(tmp_path, substrate={"platform_repo": "../elsewhere"})) == (tmp_path / ".." / "elsewhere").resolve()


def test_a_platform_repo_that_is_not_a_directory_is_one_line(tmp_path):
    with pytest.raises(ConfigError) as info:
        Fork.of(env_in(tmp_path, substrate={"platform_repo": "nope"}))
    assert "substrate.platform_repo" in str(info.value) and "is not a directory" in str(info.value)


def test_the_commit_is_recorded_or_said_to_be_missing(tmp_path, monkeypatch):
    monkeypatch.setattr(fork, "COMMIT_TTL_S", 0.0)  # every look asks git
    example_platform(tmp_path, ["e"])
    assert Fork(tmp_path, "e").commit == "not a git checkout"
    git = ["git", "-C", str(tmp_path), "-c", "user.email=t@example.com", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "fork"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    assert Fork(tmp_path, "e").commit == head[:12]
    (tmp_path / "clusters" / "e" / "groups.generated.yaml").write_text("- {name: x, layer: platform, catalogPath: c}\n")
    assert Fork(tmp_path, "e").commit == f"{head[:12]} + uncommitted changes"


# ---- make root --------------------------------------------------------------------------------------
@pytest.mark.parametrize("profile", list(LAYERS))
def test_make_root_applies_the_projects_and_one_appset_per_layer_of_the_profile(platform_fork, profile):
    spec = platform_installed.desired_platform(seed_env(platform_fork, substrate={"layer": profile}))
    on_disk = yaml.safe_load((platform_fork / "clusters/ai-dev/projects/platform.yaml").read_text())
    assert spec.roots[0] == on_disk  # field for field, the finalizer and the whole sourceRepos list included
    assert [o["metadata"]["name"] for o in spec.roots[1:]] == [f"layer-{layer}" for layer in LAYERS[profile]]
    for obj, layer in zip(spec.roots[1:], LAYERS[profile]):
        assert obj == yaml.safe_load((platform_fork / f"clusters/ai-dev/appsets/{layer}.yaml").read_text())


def test_the_seed_project_allows_every_chart_repository_the_catalog_uses(platform_fork):
    spec = platform_installed.desired_platform(seed_env(platform_fork))
    allowed = set(spec.roots[0]["spec"]["sourceRepos"])
    assert {"quay.io/jetstack/charts", "https://kedacore.github.io/charts", "registry.k8s.io/kueue/charts"} <= allowed
    assert "resources-finalizer.argocd.argoproj.io" in spec.roots[1]["spec"]["template"]["metadata"]["finalizers"]


def test_a_missing_or_empty_groups_file_names_make_resolve_groups(tmp_path):
    example_platform(tmp_path, ["e"])
    groups = tmp_path / "clusters" / "e" / "groups.generated.yaml"
    groups.unlink()
    with pytest.raises(ConfigError) as info:
        platform_installed.desired_platform(env_in(tmp_path))
    assert str(info.value) == (f"{groups}: (file): is missing; run `make resolve-groups` in the fork (it writes the "
                               f"groups every layer's ApplicationSet reads from config.yaml's features) and commit "
                               f"the file")
    groups.write_text("")
    with pytest.raises(ConfigError, match="is empty: it holds no groups; run `make resolve-groups`"):
        platform_installed.desired_platform(env_in(tmp_path))


def test_an_appset_that_reads_another_repository_than_the_config_is_refused(tmp_path):
    example_platform(tmp_path, ["e"])
    with pytest.raises(ConfigError) as info:
        platform_installed.desired_platform(env_in(tmp_path, repoURL="https://github.com/someone/else"))
    assert "spec.generators[0].git.repoURL" in str(info.value) and "make fork-init" in str(info.value)


def test_a_layer_without_its_appset_file_is_named(tmp_path):
    example_platform(tmp_path, ["e"])
    (tmp_path / "clusters/e/appsets/serving.yaml").unlink()
    with pytest.raises(ConfigError, match=r"appsets/serving.yaml: \(file\): is missing; allowed: one ApplicationSet"):
        platform_installed.desired_platform(env_in(tmp_path, substrate={"layer": "serving"}))


def test_the_forks_own_store_is_argo_cds_to_apply(platform_fork, tmp_path):
    spec = platform_installed.desired_platform(seed_env(platform_fork))
    assert spec.store_from_fork and spec.secret_store["spec"]["provider"] == {"gcpsm": {"projectID": "ai-lab"}}
    example_platform(tmp_path, ["e"])
    assert not platform_installed.desired_platform(env_in(tmp_path)).store_from_fork


# ---- Argo CD's bootstrap ----------------------------------------------------------------------------
def test_argo_cd_is_the_release_chart_and_values_of_the_forks_install_script(platform_fork):
    fork = Fork(platform_fork, "ai-dev")
    spec = argocd.desired_argocd(seed_env(platform_fork), fork)
    assert (spec.chart_version, spec.version_from) == ("9.5.21", "bootstrap/install.sh CHART_VERSION")
    assert spec.values == yaml.safe_load((platform_fork / "bootstrap/argo-cd/values.yaml").read_text())
    assert spec.values["redisSecretInit"] == {"enabled": False}
    job = argocd.bootstrap_objects(spec)[-1]
    script = job["spec"]["template"]["spec"]["containers"][0]["command"][-1]
    assert "helm upgrade --install argo-cd argo/argo-cd --version 9.5.21 --namespace argocd -f /values/values.yaml" in script
    override = argocd.desired_argocd(seed_env(platform_fork, substrate={"argocd_chart_version": "9.6.0"}), fork)
    assert override.chart_version == "9.6.0"


def test_an_installed_argo_cd_of_another_version_or_values_is_drift_named_by_key():
    spec = argocd.ArgoCDSpec("9.5.21", "bootstrap/install.sh CHART_VERSION", {"configs": {"cm": {"url": "a"}}}, "v")
    from resources.helm import HelmRelease
    old = HelmRelease("argo-cd", "argocd", 1, "deployed", "argo-cd", "9.1.4", {"configs": {"cm": {"url": "s3cr3t"}}})
    actions = argocd.plan_argocd(spec, argocd.ArgoCDObserved(True, old, (), True))
    assert [(a.kind, a.field) for a in actions] == [("update", "chart version"), ("update", "values")]
    assert "configs.cm.url" in actions[1].summary() and "s3cr3t" not in actions[1].summary()  # names, never values
    same = HelmRelease("argo-cd", "argocd", 1, "deployed", "argo-cd", "9.5.21", {"configs": {"cm": {"url": "a"}}})
    assert argocd.plan_argocd(spec, argocd.ArgoCDObserved(True, same, (), True)) == []
    [other] = argocd.plan_argocd(spec, argocd.ArgoCDObserved(True, None, ("argocd",), True))
    assert other.kind == "cannot-fix" and "release argocd" in other.observed


# ---- secrets ----------------------------------------------------------------------------------------
def test_the_internal_secrets_are_the_seed_scripts_list(platform_fork):
    names = Fork(platform_fork, "ai-dev").seed_secret_names()
    assert names.hex_keys == SEED_SECRET_DEFAULTS.hex_keys and names.source.endswith("scripts/seed-secrets.sh")
    assert (names.cookie_key, names.dex_password, names.dex_hash) == (
        "oauth2-proxy-cookie-secret", "dex-admin-password", "dex-admin-hash")
    spec = secrets_seeded.desired_secrets(seed_env(platform_fork, features={"n8n": False}))
    assert "n8n-encryption-key" in spec.internal_names and "dex-tabby-client-secret" in spec.internal_names
    assert "dex-n8n-client-secret" not in spec.internal_names


def test_a_fork_without_the_script_gets_the_seeds_list(tmp_path):
    example_platform(tmp_path, ["e"])
    assert Fork(tmp_path, "e").seed_secret_names() == SEED_SECRET_DEFAULTS


def test_the_keys_the_forks_external_secrets_read_follow_the_enabled_layers(platform_fork):
    fork = Fork(platform_fork, "ai-dev")
    platform = fork.external_secret_keys(SEED_URL, "platform")
    # identity (Dex, oauth2-proxy) and dns are enabled platform groups in the seed's groups file
    assert {"dex-admin-hash", "dex-tabby-client-secret", "oauth2-proxy-cookie-secret"} <= set(platform)
    assert "platform/dex/manifests/externalsecret.yaml" in platform["dex-admin-hash"]
    assert "anthropic-api-key" not in platform  # egress is off in the seed's config
    full = fork.external_secret_keys(SEED_URL, "full")
    assert set(platform) <= set(full)
    assert "vllm-api-key" in set(full) - set(platform)  # serving/secret-refs: a later layer than platform


# ---- kubectl's last-applied annotation ---------------------------------------------------------------
def test_the_last_applied_annotation_is_what_kubectl_writes():
    obj = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "namespace": "b"},
           "data": {"z": "<&>", "a": "—"}}
    out = with_last_applied(obj)
    # kubectl 1.33's own annotation for this file, read back from a cluster: sorted keys, an empty
    # annotations map, Go's HTML escapes, UTF-8 kept, a trailing newline.
    assert out["metadata"]["annotations"][LAST_APPLIED] == (
        '{"apiVersion":"v1","data":{"a":"—","z":"\\u003c\\u0026\\u003e"},"kind":"ConfigMap",'
        '"metadata":{"annotations":{},"name":"a","namespace":"b"}}\n')
    assert go_json({"s": "\b\\b"}) == '{"s":"\\u0008\\\\b"}\n'
    assert "annotations" not in obj["metadata"]  # the file's object is left as it is


def test_the_secrets_spec_reads_the_keys_of_this_repository_s_external_secrets(platform_fork):
    """desired_secrets asks the fork for the keys its ExternalSecrets read in the sources of *this*
    repository (the environment's repoURL): the seed's platform layer reads Dex's admin pair."""
    from substrate.secrets_seeded import desired_secrets
    spec = desired_secrets(seed_env(platform_fork))
    assert spec.platform_keys_error == ""
    assert {"dex-admin-hash", "oauth2-proxy-cookie-secret"} <= set(spec.platform_keys)


def test_a_fleet_sharing_one_checkout_asks_git_once_per_ttl(tmp_path, monkeypatch):
    # A drift tick reads the desired state of every environment, and most share one checkout: within
    # COMMIT_TTL_S the answer is reused (an edit is seen that much later), after it git is asked again.
    monkeypatch.setattr(fork, "COMMIT_TTL_S", 3600.0)
    example_platform(tmp_path, ["e", "f"])
    git = ["git", "-C", str(tmp_path), "-c", "user.email=t@example.com", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "fork"], check=True)
    first = Fork(tmp_path, "e").commit
    (tmp_path / "clusters" / "e" / "groups.generated.yaml").write_text("- {name: x, layer: platform, catalogPath: c}\n")
    assert Fork(tmp_path, "f").commit == first  # the same checkout within the TTL: not asked again
    monkeypatch.setattr(fork, "COMMIT_TTL_S", 0.0)
    assert Fork(tmp_path, "f").commit == f"{first} + uncommitted changes"
