"""The Kubernetes wire protocol beyond CRUD, through the official client and raw requests: watches,
Tables, protobuf bodies, the scale subresource, self-reviews, node Leases, health and version.

Sources of the real behaviour: https://kubernetes.io/docs/reference/using-api/api-concepts/ (watches,
410 Expired, Tables, protobuf encoding), https://kubernetes.io/docs/reference/using-api/health-checks/,
https://kubernetes.io/docs/concepts/architecture/leases/#node-heart-beats .
"""

from __future__ import annotations

import json
import threading
import time

import pytest
from kubernetes import client, watch

from sandbox.wire import kubeproto

from .test_kube_api import CLUSTER, kube, raw  # noqa: F401 - kube is the shared cluster fixture


def test_a_watch_stays_open_and_streams_changes_after_its_resource_version(kube):
    core = client.CoreV1Api(kube.api)
    rv = core.list_namespaced_config_map("default").metadata.resource_version

    def later():
        time.sleep(0.5)
        core.create_namespaced_config_map("default", {"metadata": {"name": "seen"}, "data": {"a": "1"}})
        core.patch_namespaced_config_map("seen", "default", {"data": {"a": "2"}})
        core.delete_namespaced_config_map("seen", "default")
    threading.Thread(target=later).start()
    started = time.monotonic()
    events = []
    for event in watch.Watch().stream(core.list_namespaced_config_map, "default", resource_version=rv,
                                      timeout_seconds=3):
        events.append((event["type"], event["object"].metadata.name, event["object"].data))
        if len(events) == 3:
            break
    assert events == [("ADDED", "seen", {"a": "1"}), ("MODIFIED", "seen", {"a": "2"}), ("DELETED", "seen", {"a": "2"})]
    assert time.monotonic() - started >= 0.5  # it waited for the changes instead of closing


def test_a_quiet_watch_lasts_until_its_timeout(kube):
    core = client.CoreV1Api(kube.api)
    rv = core.list_namespaced_config_map("default").metadata.resource_version
    started = time.monotonic()
    assert list(watch.Watch().stream(core.list_namespaced_config_map, "default", resource_version=rv,
                                     timeout_seconds=2)) == []
    assert time.monotonic() - started >= 1.9  # client-go calls a watch closed within 1 s a "very short watch"


def test_a_watch_from_zero_starts_with_every_object_and_selectors_filter_it(kube):
    core = client.CoreV1Api(kube.api)
    for name, team in (("a", "x"), ("b", "y")):
        core.create_namespaced_config_map("default", {"metadata": {"name": name, "labels": {"team": team}}})
    got = [(e["type"], e["object"].metadata.name) for e in watch.Watch().stream(
        core.list_namespaced_config_map, "default", label_selector="team=x", resource_version="0", timeout_seconds=1)]
    assert got == [("ADDED", "a")]


def test_a_watch_from_a_resource_version_older_than_the_log_is_410_expired(kube):
    code, body = raw(kube, "GET", "/api/v1/namespaces/default/configmaps?watch=true&resourceVersion=1")
    assert code == 200
    event = json.loads(body.decode().splitlines()[0])
    assert event["type"] == "ERROR" and event["object"]["code"] == 410 and event["object"]["reason"] == "Expired"


def test_get_as_table_answers_with_columns_and_partial_object_metadata(kube):
    client.CoreV1Api(kube.api).create_namespaced_config_map("default", {"metadata": {"name": "t"}, "data": {"x": "1"}})
    code, body = raw(kube, "GET", "/api/v1/namespaces/default/configmaps", accept=
                     "application/json;as=Table;v=v1;g=meta.k8s.io,application/json")
    doc = json.loads(body)
    assert code == 200 and doc["kind"] == "Table" and doc["metadata"]["resourceVersion"]
    assert [c["name"] for c in doc["columnDefinitions"]] == ["Name", "Data", "Age"]
    (row,) = doc["rows"]
    assert row["cells"][:2] == ["t", 1] and row["cells"][2].endswith("s")
    assert row["object"]["kind"] == "PartialObjectMetadata" and row["object"]["metadata"]["name"] == "t"


def _field(number: int, payload: bytes) -> bytes:
    return bytes([number << 3 | 2, len(payload)]) + payload


def test_a_protobuf_body_is_decoded_as_kubectl_sends_it(kube):
    """The envelope `k8s\\0` + runtime.Unknown{typeMeta{apiVersion, kind}, raw}, with Go's empty fields."""
    meta = _field(1, b"pb-config") + _field(2, b"") + _field(3, b"default") + _field(8, b"") + \
        _field(11, _field(1, b"team") + _field(2, b"x"))
    configmap = _field(1, meta) + _field(2, _field(1, b"k") + _field(2, b"v")) + bytes([4 << 3, 0])
    body = kubeproto.MAGIC + _field(1, _field(1, b"v1") + _field(2, b"ConfigMap")) + _field(2, configmap) + \
        _field(3, b"") + _field(4, b"")
    code, answer = raw(kube, "POST", "/api/v1/namespaces/default/configmaps", body,
                       content_type="application/vnd.kubernetes.protobuf")
    assert code == 201, answer
    stored = client.CoreV1Api(kube.api).read_namespaced_config_map("pb-config", "default")
    assert stored.data == {"k": "v"} and stored.metadata.labels == {"team": "x"} and stored.immutable is False


def test_a_protobuf_body_of_a_kind_the_sandbox_does_not_decode_is_a_clear_415(kube):
    body = kubeproto.MAGIC + _field(1, _field(1, b"v1") + _field(2, b"PersistentVolume")) + _field(2, b"")
    code, answer = raw(kube, "POST", "/api/v1/persistentvolumes", body,
                       content_type="application/vnd.kubernetes.protobuf")
    assert code == 415 and "not PersistentVolume" in json.loads(answer)["message"]


def test_the_scale_subresource_reads_and_sets_replicas(kube):
    apps = client.AppsV1Api(kube.api)
    apps.create_namespaced_deployment("default", {"metadata": {"name": "d"}, "spec": {
        "replicas": 2, "selector": {"matchLabels": {"app": "d"}},
        "template": {"metadata": {"labels": {"app": "d"}}, "spec": {"containers": [{"name": "c", "image": "x"}]}}}})
    scale = apps.read_namespaced_deployment_scale("d", "default")
    assert (scale.spec.replicas, scale.status.selector) == (2, "app=d")
    apps.patch_namespaced_deployment_scale("d", "default", {"spec": {"replicas": 4}})
    assert apps.read_namespaced_deployment("d", "default").spec.replicas == 4


def test_self_reviews_answer_who_the_token_is_and_what_it_may_do(kube):
    authz = client.AuthorizationV1Api(kube.api)
    review = authz.create_self_subject_access_review(
        {"spec": {"resourceAttributes": {"verb": "delete", "resource": "nodes"}}})
    assert review.status.allowed is True
    whoami = client.AuthenticationV1Api(kube.api).create_self_subject_review({})
    assert whoami.status.user_info.username == "kubernetes-admin"


def test_every_node_has_a_heartbeat_lease(kube):
    core = client.CoreV1Api(kube.api)
    core.create_node(client.V1Node(metadata=client.V1ObjectMeta(name="n1")))
    core.list_namespace()  # any request lets the simulations run
    lease = client.CoordinationV1Api(kube.api).read_namespaced_lease("n1", "kube-node-lease")
    assert lease.spec.holder_identity == "n1" and lease.spec.lease_duration_seconds == 40 and lease.spec.renew_time


def test_readyz_verbose_and_a_gke_version(kube):
    code, body = raw(kube, "GET", "/readyz?verbose")
    assert code == 200 and body.decode().splitlines()[-1] == "readyz check passed"
    assert "[+]etcd ok" in body.decode()
    kube.store.data["meta"]["gitVersion"] = "v1.33.5-gke.1000"
    info = client.VersionApi(kube.api).get_code()
    assert (info.git_version, info.minor) == ("v1.33.5-gke.1000", "33+")


@pytest.mark.parametrize("length", [b"-1", b"abc", b"99999999999"])
def test_a_malformed_content_length_is_a_400_not_a_hang(kube, length):
    import socket
    import ssl

    host, port = kube.server.removeprefix("https://").split(":")
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    with socket.create_connection((host, int(port)), timeout=5) as sock, \
            context.wrap_socket(sock, server_hostname=host) as tls:
        tls.sendall(b"POST /api/v1/namespaces HTTP/1.1\r\nHost: x\r\nContent-Length: " + length + b"\r\n\r\n")
        answer = tls.recv(4096)
    assert answer.startswith(b"HTTP/1.1 400")


def test_deeply_nested_json_is_a_400_not_a_500(kube):
    body = b"[" * 100000 + b"]" * 100000
    code, answer = raw(kube, "POST", "/api/v1/namespaces/default/configmaps", body)
    assert code == 400 and json.loads(answer)["reason"] == "BadRequest"
