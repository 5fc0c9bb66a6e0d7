"""gpuplat's Kubernetes resource against the sandbox: what a long-lived process meets over time."""

from __future__ import annotations

import json
import urllib.request

from resources.kube import Kube, write_private
from sandbox.app import Sandbox
from tests.conftest import EPHEMERAL


def _kubeconfig(sb, cluster: str, path):
    with urllib.request.urlopen(f"{sb.urls()['admin']}/sandbox/kubeconfig?cluster={cluster}", timeout=10) as resp:
        return write_private(path, resp.read().decode())


def _install_crd(sb, cluster: str) -> None:
    with sb.store.lock:
        kube = sb.kube(cluster)
        rt = kube.type_for("apiextensions.k8s.io/v1", "CustomResourceDefinition")
        kube.create(rt, {"metadata": {"name": "widgets.example.com"}, "spec": {
            "group": "example.com", "scope": "Cluster", "names": {"plural": "widgets", "kind": "Widget"},
            "versions": [{"name": "v1", "served": True, "storage": True}]}})
        sb.store.save_if_dirty()


def test_a_cluster_recreated_at_the_same_address_is_not_served_from_stale_discovery(tmp_path):
    # One sandbox learns Widget; a fresh one on the same port does not serve it: gpuplat must notice.
    ports = dict(EPHEMERAL)
    first = Sandbox(tmp_path / "one", ports=ports)
    first.start()
    port = first.kube_servers["byo-gpu"].port
    _install_crd(first, "byo-gpu")
    path = _kubeconfig(first, "byo-gpu", tmp_path / "kc")
    kube = Kube(str(path))
    assert kube.has_kind("example.com/v1", "Widget")
    kube.apply({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}})
    first.stop()

    (tmp_path / "two").mkdir()
    (tmp_path / "two" / "state.json").write_text(json.dumps({"kube_ports": {"byo-gpu": port}}))
    second = Sandbox(tmp_path / "two", ports=ports)
    second.start()
    assert second.kube_servers["byo-gpu"].port == port
    try:
        again = Kube(str(_kubeconfig(second, "byo-gpu", tmp_path / "kc")))
        assert again.get("example.com/v1", "Widget", "w") is None
        assert again.has_kind("example.com/v1", "Widget") is False
        assert again.list("example.com/v1", "Widget") == []
    finally:
        second.stop()


def test_kubeconfigs_are_written_privately_and_only_when_they_change(tmp_path):
    path = tmp_path / "env.kubeconfig"
    write_private(path, "a: 1\n")
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    before = path.stat().st_mtime_ns
    write_private(path, "a: 1\n")
    assert path.stat().st_mtime_ns == before
    write_private(path, json.dumps({"a": 2}))
    assert path.read_text() == '{"a": 2}' and not list(tmp_path.glob(".env.kubeconfig.*"))
