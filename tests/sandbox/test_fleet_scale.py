"""A sandbox holding many clusters: a request costs what it touches, and a save writes what changed
(sandbox/app.py Sandbox.reconcile, sandbox/core.py StateStore).

A real cloud's controllers run for every cluster all the time; the sandbox runs a cluster's simulations
when a request looks at that cluster, with the simulated time of that moment, which the level-based
controllers make equivalent (what is due now). These tests hold two clusters and watch which of them
each request's simulations ran for, and which files a change wrote.
"""

from __future__ import annotations

import json
import time
from datetime import datetime

import pytest
from google.cloud import container_v1, secretmanager_v1
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from sandbox.app import Sandbox
from sandbox.core import SAVE_DELAY_S
from sandbox.sims.node_leases import RENEW_S
from sandbox.sims.util import kube_clusters
from tests.conftest import EPHEMERAL, admin, client_options as opts
from tests.sandbox.conftest import enable_all

PROJECT = "gpuplat-test"
PARENT = f"projects/{PROJECT}/locations/us-central1"
KUBE_ID = f"gke_{PROJECT}_us-central1_{{}}"


def create_cluster(c: container_v1.ClusterManagerClient, name: str) -> None:
    pool = container_v1.NodePool(name="system", initial_node_count=1,
                                 config=container_v1.NodeConfig(machine_type="e2-standard-4"))
    op = c.create_cluster(parent=PARENT, cluster=container_v1.Cluster(name=name, node_pools=[pool]))
    while op.status != container_v1.Operation.Status.DONE:
        op = c.get_operation(name=f"{PARENT}/operations/{op.name}")


def core_api(sb: Sandbox, name: str, tmp_path) -> k8s.CoreV1Api:
    path = tmp_path / f"{name}.kubeconfig"
    path.write_text(admin(sb.urls(), "GET", f"/sandbox/kubeconfig?cluster={PARENT}/clusters/{name}"))
    return k8s.CoreV1Api(k8s_config.new_client_from_config(config_file=str(path), persist_config=False))


@pytest.fixture
def two_clusters(tmp_path):
    sb = Sandbox(tmp_path / "state", ports=EPHEMERAL)
    sb.start()
    enable_all(sb.urls())
    gke = container_v1.ClusterManagerClient(**opts(sb.urls(), "container"))
    for name in ("a", "b"):
        create_cluster(gke, name)
    yield sb, gke
    if not sb.stopped.is_set():
        sb.stop()


def test_a_request_runs_the_simulations_of_the_cluster_it_touches_and_no_other(two_clusters, tmp_path):
    sb, gke = two_clusters
    a, b = core_api(sb, "a", tmp_path), core_api(sb, "b", tmp_path)
    passes: list[list[str]] = []
    sb.controllers.append(lambda s: passes.append([k.cluster_id for k in kube_clusters(s)]))
    sm = secretmanager_v1.SecretManagerServiceClient(**opts(sb.urls(), "secretmanager"))

    def after_a_while(call) -> list[list[str]]:
        sb.clock.advance(2)  # past the second within which a cluster's pass is not repeated
        passes.clear()
        call()
        return passes[:]

    assert after_a_while(lambda: a.list_node()) == [[KUBE_ID.format("a")]]
    assert after_a_while(lambda: gke.get_cluster(name=f"{PARENT}/clusters/b")) == [[KUBE_ID.format("b")]]
    assert after_a_while(lambda: list(sm.list_secrets(parent=f"projects/{PROJECT}"))) == [[]]
    # GKE's list shows every cluster's pools as their simulations left them: all of them run (the
    # bring-your-own and Hetzner clusters every sandbox holds too).
    (listed,) = after_a_while(lambda: gke.list_clusters(parent=PARENT))
    assert {KUBE_ID.format("a"), KUBE_ID.format("b"), "byo-gpu", "hetzner-gpu"} == set(listed)

    # b's kubelet heartbeat is due while nobody looks at b; the first look at b sees it renewed.
    leases = k8s.CoordinationV1Api(b.api_client)
    stored = lambda: next(o for k, o in sb.store.section("kube")[KUBE_ID.format("b")]["objects"].items()
                          if k.startswith("coordination.k8s.io/leases/"))["spec"]["renewTime"]
    sb.clock.advance(RENEW_S + 5)
    a.list_node()
    assert sb.clock.now() - datetime.fromisoformat(stored()).timestamp() > RENEW_S  # not renewed unseen
    renewed = leases.list_namespaced_lease("kube-node-lease").items[0].spec.renew_time.timestamp()
    assert sb.clock.now() - renewed < 2


def _mtimes(sb: Sandbox) -> dict[str, int]:
    return {f.name: f.stat().st_mtime_ns for f in (sb.state_dir / "kube").glob("*.json")}


def _saved(sb: Sandbox, before: dict[str, int], name: str) -> dict[str, int]:
    deadline = time.monotonic() + 40 * SAVE_DELAY_S
    while time.monotonic() < deadline:
        now = _mtimes(sb)
        if now.get(name) != before.get(name):
            time.sleep(2 * SAVE_DELAY_S)  # anything else that save wrote is on disk too
            return _mtimes(sb)
        time.sleep(SAVE_DELAY_S / 5)
    raise AssertionError(f"{name} was not written within {40 * SAVE_DELAY_S} s")


def test_a_change_in_one_cluster_writes_that_cluster_s_file_and_survives_a_restart(two_clusters, tmp_path):
    sb, _ = two_clusters
    a = core_api(sb, "a", tmp_path)
    a.list_node()  # both clusters settled and written
    core_api(sb, "b", tmp_path).list_node()
    with sb.store.lock:
        sb.store.save_if_dirty()
    before = _mtimes(sb)
    file_a, file_b = f"{KUBE_ID.format('a')}.json", f"{KUBE_ID.format('b')}.json"
    assert {file_a, file_b} <= before.keys()

    a.create_namespaced_config_map("default", k8s.V1ConfigMap(metadata=k8s.V1ObjectMeta(name="kept"),
                                                              data={"k": "v"}))
    after = _saved(sb, before, file_a)
    assert after[file_b] == before[file_b]  # b did not change: its file was not written again
    assert "kube" not in json.loads((sb.state_dir / "state.json").read_text())
    sb.stop()

    again = Sandbox(tmp_path / "state", ports=EPHEMERAL)
    again.start()
    try:
        assert core_api(again, "a", tmp_path).read_namespaced_config_map("kept", "default").data == {"k": "v"}
        assert len(core_api(again, "b", tmp_path).list_node().items) == 1
    finally:
        again.stop()


def test_a_state_saved_as_one_document_is_read_and_moves_to_a_file_per_cluster(two_clusters, tmp_path):
    sb, _ = two_clusters
    sb.stop()
    state_dir = tmp_path / "state"
    whole = json.loads((state_dir / "state.json").read_text())
    whole["kube"] = {f.name[:-5]: json.loads(f.read_text()) for f in (state_dir / "kube").glob("*.json")}
    for f in (state_dir / "kube").glob("*.json"):
        f.unlink()
    (state_dir / "state.json").write_text(json.dumps(whole))  # as sandboxes before this one saved it

    older = Sandbox(state_dir, ports=EPHEMERAL)
    older.start()
    try:
        assert len(core_api(older, "a", tmp_path).list_node().items) == 1
    finally:
        older.stop()
    assert "kube" not in json.loads((state_dir / "state.json").read_text())
    assert {f.name for f in (state_dir / "kube").glob("*.json")} >= {f"{KUBE_ID.format(n)}.json" for n in "ab"}


def test_a_fleet_s_worth_of_answers_is_rendered_once_each_and_the_least_recently_asked_goes_first(monkeypatch):
    """Rendering a stored message as Google's JSON goes through protobuf (~0.5 ms); a drift tick over a
    fleet asks every cluster once a minute. The cache of rendered answers holds more than one tick's
    questions (it held 512 and was emptied each time it filled: at 500 clusters every GetCluster was rendered
    anew), and when full drops the answer asked least recently."""
    from google.protobuf import json_format

    from sandbox.wire import google as wire
    from sandbox.wire.http import Request

    monkeypatch.setattr(wire, "_EMIT_CACHE", type(wire._EMIT_CACHE)())
    rendered = []
    parse = json_format.ParseDict
    monkeypatch.setattr(json_format, "ParseDict", lambda *a, **k: rendered.append(1) or parse(*a, **k))
    req = Request("GET", "/", {"$alt": ["json;enum-encoding=int"]}, b"", {}, {})
    clusters = [{"name": f"c-{i:04d}", "status": "RUNNING", "nodePools": [{"name": "gpu", "status": "RUNNING"}]}
                for i in range(1000)]

    first = [wire.emit_google(req, container_v1.Cluster, c).body for c in clusters]
    again = [wire.emit_google(req, container_v1.Cluster, c).body for c in clusters]
    assert again == first and len(rendered) == 1000  # the second tick renders nothing
    assert json.loads(first[7]) == {"name": "c-0007", "status": 2, "nodePools": [{"name": "gpu", "status": 2}]}

    monkeypatch.setattr(wire, "_EMIT_CACHE_MAX", 1000)
    wire.emit_google(req, container_v1.Cluster, clusters[0])  # c-0000 asked last now: c-0001 is the oldest
    wire.emit_google(req, container_v1.Cluster, {"name": "new"})
    assert len(rendered) == 1001
    wire.emit_google(req, container_v1.Cluster, clusters[0])
    assert len(rendered) == 1001
    wire.emit_google(req, container_v1.Cluster, clusters[1])
    assert len(rendered) == 1002


def test_the_sandbox_says_how_long_its_garbage_collector_ran_and_how_much_it_tracks(sandbox):
    """benchmarks/drift_tick.py reads the sandbox process's collector time per tick (GET /sandbox/process):
    a fleet's state could make every full collection long. The clock counts what ran since it started."""
    import gc

    before = admin(sandbox, "GET", "/sandbox/process")
    assert set(before) == {"gc_seconds", "collections", "tracked", "frozen"} and before["tracked"] > 0
    for _ in range(3):
        gc.collect()  # an in-process sandbox: the test's own full collections are this process's
    after = admin(sandbox, "GET", "/sandbox/process")
    assert after["collections"][2] >= before["collections"][2] + 3
    assert after["gc_seconds"] > before["gc_seconds"]
