"""gpuplat never talks to the wrong cluster: a stale kubeconfig that reaches a foreign API server (same
context name, another server) gets no call at all, on every path and for every single-asset run.

GKE: the Kubernetes client is built from the endpoint and CA GKE reports now and a Google token; the
dedicated kubeconfig is only rewritten for people. Off GKE: the kubeconfig is read fresh each run and
the cluster's identity (API server URL and kube-system UID) recorded at the first materialization
must match before anything is sent.
"""

from __future__ import annotations

import urllib.request

import pytest
import yaml
from dagster import AssetKey

from substrate.history import recorded_identity
from substrate.pieces import PIECES
from sandbox.app import Sandbox
from tests.conftest import EPHEMERAL

from .test_off_gke import failure_message, use_shipped

ASSETS = [p.name for p in PIECES]


@pytest.fixture
def foreign(tmp_path):
    """Another sandbox: the API server a stale kubeconfig would reach by mistake."""
    sb = Sandbox(tmp_path / "foreign", ports=EPHEMERAL)
    sb.start()
    yield sb
    sb.stop()


def foreign_kubeconfig(foreign: Sandbox, cluster: str, context: str) -> str:
    """The foreign cluster's admin kubeconfig, renamed to carry the context name the environment expects."""
    url = f"{foreign.urls()['admin']}/sandbox/kubeconfig?cluster={cluster}"
    doc = yaml.safe_load(urllib.request.urlopen(url, timeout=10).read())
    doc["clusters"][0]["name"] = doc["contexts"][0]["context"]["cluster"] = context
    doc["contexts"][0]["name"] = doc["current-context"] = context
    return yaml.safe_dump(doc)


def foreign_calls(foreign: Sandbox) -> int:
    return foreign.counters.snapshot().get("kubernetes", {}).get("read", 0) + \
        foreign.counters.snapshot().get("kubernetes", {}).get("mutate", 0)


def test_gke_a_stale_kubeconfig_to_a_foreign_server_gets_no_call_and_is_rewritten(gp, foreign):
    assert gp.materialize().success
    path = gp.tmp_path / "kube" / "sandbox.kubeconfig"
    ours = yaml.safe_load(path.read_text())["clusters"][0]["cluster"]["server"]
    stale = foreign_kubeconfig(foreign, "byo-gpu", "gke_gpuplat-test_us-central1-a_ai-dev")
    used_the_cluster = []
    for asset in ASSETS:
        path.write_text(stale)
        result = gp.materialize(select=[asset], raise_on_error=False)
        assert result.success, (asset, failure_message(result))
        assert foreign_calls(foreign) == 0, asset
        if "kube_target" in result.asset_materializations_for_node(asset)[0].metadata:
            used_the_cluster.append(asset)  # it rewrote the kubeconfig from GKE's endpoint before using it
            assert yaml.safe_load(path.read_text())["clusters"][0]["cluster"]["server"] == ours, asset
    assert {"cluster", "gpu_pool", "gpu_stack", "storage_class", "platform_installed"} <= set(used_the_cluster)


@pytest.mark.parametrize("shipped, env, cluster", [("sandbox-byo", "byo", "byo-gpu"),
                                                   ("sandbox-hetzner", "hetzner", "hetzner-gpu")])
def test_off_gke_a_kubeconfig_that_now_reaches_another_server_is_refused_before_any_call(
        gp, foreign, fast_clock, shipped, env, cluster):
    use_shipped(gp, shipped, env)
    first = gp.materialize(select=["apis_enabled", "service_accounts", "cluster"], env=env)
    recorded = first.asset_materializations_for_node("cluster")[0].metadata["kube_identity"].value
    assert recorded["server"].startswith("https://127.0.0.1:") and recorded["kube_system_uid"]
    assert recorded_identity(gp.instance, env).kube_system_uid == recorded["kube_system_uid"]

    path = gp.tmp_path / "kube" / f"{env}.kubeconfig"
    path.write_text(foreign_kubeconfig(foreign, cluster, cluster))  # same context name, another server
    refused = []
    for asset in ASSETS:
        result = gp.materialize(select=[asset], env=env, raise_on_error=False)
        assert foreign_calls(foreign) == 0, asset
        if not result.success:  # every piece that needs the cluster stops, saying why; the others never ask it
            message = failure_message(result)
            assert "reaches another cluster" in message and recorded["server"] in message, (asset, message)
            refused.append(asset)
    assert {"cluster", "gpu_pool", "gpu_stack", "storage_class", "platform_installed"} <= set(refused)

    checks = gp.drift_checks(env=env, raise_on_error=False)
    target = next(e for e in checks.get_asset_check_evaluations() if e.check_name == "kube_target_reachable")
    assert not target.passed and recorded["kube_system_uid"] in target.description
    assert "gpuplat/adopt-kube-target=true" in target.metadata["remedy"].value
    assert foreign_calls(foreign) == 0


def test_off_gke_a_cluster_recreated_behind_the_same_url_is_refused_before_any_write(gp, fast_clock):
    use_shipped(gp, "sandbox-byo", "byo")
    assert gp.materialize(select=["apis_enabled", "service_accounts", "cluster"], env="byo").success
    # The same URL now serves a new cluster: a new kube-system namespace, a new UID.
    with gp.sandbox.store.lock:
        kube = gp.sandbox.kube("byo-gpu")
        ns = kube.get_object("", "namespaces", None, "kube-system")
        kube.delete(kube.type_for("v1", "Namespace"), None, "kube-system")
        kube.create(kube.type_for("v1", "Namespace"), {"metadata": {"name": "kube-system", "labels": ns["metadata"]
                                                                   .get("labels", {})}})
        gp.sandbox.store.save_if_dirty()
    gp.admin.reset()
    result = gp.materialize(select=["storage_class"], env="byo", raise_on_error=False)
    assert not result.success and "reaches another cluster" in failure_message(result)
    assert gp.admin.calls()["kubernetes"]["methods"] == {"get:namespaces": 1}  # the identity read, nothing else

    adopted = gp.materialize(select=["cluster"], env="byo", tags={"gpuplat/adopt-kube-target": "true"})
    assert adopted.success
    assert gp.materialize(select=["storage_class"], env="byo").success


def test_cluster_kubeconfig_applies_only_to_an_environment_that_opts_in(gp, tmp_path, monkeypatch):
    from substrate.environments import load_environment
    from substrate.piece import target_of
    monkeypatch.setenv("CLUSTER_KUBECONFIG", str(tmp_path / "shared.kubeconfig"))
    use_shipped(gp, "sandbox-byo", "byo")
    use_shipped(gp, "sandbox-hetzner", "hetzner", kubeconfig_env="CLUSTER_KUBECONFIG")
    byo = gp.resource.connect(target_of(load_environment("byo")))
    hetzner = gp.resource.connect(target_of(load_environment("hetzner")))
    assert byo.kubeconfig_path == gp.tmp_path / "kube" / "byo.kubeconfig"
    assert hetzner.kubeconfig_path == tmp_path / "shared.kubeconfig"


def test_the_seeds_single_environment_layout_opts_in_to_cluster_kubeconfig(tmp_path):
    from substrate.environments import load_environment

    (tmp_path / "envs" / "lab").mkdir(parents=True)
    (tmp_path / "envs" / "lab" / "config.yaml").write_text(
        "cluster: {name: lab}\ngpu_stack: none\nsecret_backend: vault\nsubstrate: {kind: byo}\n")
    assert load_environment("lab", tmp_path / "envs").kubeconfig_env == "CLUSTER_KUBECONFIG"
    (tmp_path / "envs" / "other").mkdir()
    (tmp_path / "envs" / "other" / "config.yaml").write_text("cluster: {name: other}\ngpu_stack: none\n"
                                                              "secret_backend: vault\nsubstrate: {kind: byo}\n")
    assert load_environment("lab", tmp_path / "envs").kubeconfig_env == ""


def test_a_gke_token_that_cannot_be_had_is_one_clear_error(gp, monkeypatch):
    """No gcloud, no auth plugin: the token comes from google-auth, and a refresh that fails says so once
    (https://cloud.google.com/kubernetes-engine/docs/how-to/api-server-authentication)."""
    assert gp.materialize(select=["apis_enabled", "service_accounts", "cluster"]).success
    key = gp.sandbox.state_dir / "credentials.json"
    key.write_text(key.read_text().replace("gpuplat-sandbox@", "someone-else@"))
    from resources import credentials
    monkeypatch.setattr(credentials, "_SHARED", {})
    result = gp.materialize(select=["storage_class"], raise_on_error=False)
    assert not result.success
    message = failure_message(result)
    assert "cannot get a Google access token for the GKE cluster's API" in message and "Invalid JWT" in message
    assert message.count("cannot get a Google access token") == 1
    assert AssetKey("storage_class") not in {m.asset_key for m in result.asset_materializations_for_node("storage_class")}
