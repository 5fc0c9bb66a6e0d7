"""PATCH in its four flavours, and server-side apply, through the official client."""

from __future__ import annotations

import json

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import ConflictError

from .test_kube_api import kube, raw, status_of  # noqa: F401  (the shared cluster fixture)


def daemonset(name: str = "agent") -> client.V1DaemonSet:
    labels = {"app": name}
    return client.V1DaemonSet(
        metadata=client.V1ObjectMeta(name=name, namespace="default"),
        spec=client.V1DaemonSetSpec(
            selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels),
                spec=client.V1PodSpec(
                    containers=[
                        client.V1Container(name="main", image="agent:1", args=["--a"], env=[
                            client.V1EnvVar(name="LEVEL", value="info"), client.V1EnvVar(name="MODE", value="x")]),
                        client.V1Container(name="sidecar", image="proxy:1"),
                    ],
                    volumes=[client.V1Volume(name="data", empty_dir={})]))))


def containers(ds) -> dict:
    return {c.name: c for c in ds.spec.template.spec.containers}


def dynamic(kube):
    return DynamicClient(kube.api, cache_file=str(kube.tmp_path / "discovery.json"))


def configmap(name: str, data: dict, labels: dict | None = None) -> dict:
    meta = {"name": name, "namespace": "default"}
    if labels:
        meta["labels"] = labels
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data}


# ---- strategic merge, merge and JSON patches ----------------------------------------------------------------


def test_a_dict_patch_is_strategic_and_merges_containers_and_env_by_name(kube):
    apps = client.AppsV1Api(kube.api)
    apps.create_namespaced_daemon_set("default", daemonset())
    patched = apps.patch_namespaced_daemon_set("agent", "default", {"spec": {"template": {"spec": {
        "containers": [{"name": "main", "image": "agent:2", "env": [{"name": "LEVEL", "value": "debug"},
                                                                   {"name": "NEW", "value": "1"}]}],
        "volumes": [{"name": "cache", "emptyDir": {}}]}}}})
    by_name = containers(patched)
    assert by_name.keys() == {"main", "sidecar"}
    assert by_name["main"].image == "agent:2" and by_name["main"].args == ["--a"]
    assert [(e.name, e.value) for e in by_name["main"].env] == [("LEVEL", "debug"), ("MODE", "x"), ("NEW", "1")]
    assert [v.name for v in patched.spec.template.spec.volumes] == ["data", "cache"]
    assert patched.metadata.generation == 2


def test_a_strategic_patch_honours_delete_directives_and_replaces_plain_lists(kube):
    apps = client.AppsV1Api(kube.api)
    apps.create_namespaced_daemon_set("default", daemonset())
    patched = apps.patch_namespaced_daemon_set("agent", "default", {"spec": {"template": {"spec": {"containers": [
        {"name": "sidecar", "$patch": "delete"},
        {"name": "main", "args": ["--b"], "$deleteFromPrimitiveList/unused": ["x"]}]}}}})
    assert list(containers(patched)) == ["main"]
    assert containers(patched)["main"].args == ["--b"]


def test_a_merge_patch_replaces_lists_and_null_removes_keys(kube):
    apps = client.AppsV1Api(kube.api)
    apps.create_namespaced_daemon_set("default", daemonset())
    patched = apps.patch_namespaced_daemon_set(
        "agent", "default",
        {"metadata": {"labels": {"team": "gpu"}}, "spec": {"template": {"spec": {
            "containers": [{"name": "only", "image": "solo:1"}], "volumes": None}}}},
        _content_type="application/merge-patch+json")
    assert list(containers(patched)) == ["only"]
    assert patched.spec.template.spec.volumes is None
    assert patched.metadata.labels == {"team": "gpu"}


def test_a_list_body_is_a_json_patch_with_every_operation(kube):
    core = client.CoreV1Api(kube.api)
    core.create_namespaced_config_map("default", client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="c", labels={"a": "1"}), data={"x": "1", "y": "2"}))
    patched = core.patch_namespaced_config_map("c", "default", [
        {"op": "test", "path": "/data/x", "value": "1"},
        {"op": "add", "path": "/data/z", "value": "3"},
        {"op": "replace", "path": "/data/x", "value": "10"},
        {"op": "remove", "path": "/data/y"},
        {"op": "copy", "from": "/data/z", "path": "/data/z2"},
        {"op": "move", "from": "/data/z2", "path": "/data/moved"},
        {"op": "add", "path": "/metadata/labels/cloud.google.com~1gke-nodepool", "value": "gpu"},
    ])
    assert patched.data == {"x": "10", "z": "3", "moved": "3"}
    assert patched.metadata.labels == {"a": "1", "cloud.google.com/gke-nodepool": "gpu"}


def test_a_failed_json_patch_test_is_unprocessable_and_changes_nothing(kube):
    core = client.CoreV1Api(kube.api)
    core.create_namespaced_config_map("default", client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="c"), data={"x": "1"}))
    with pytest.raises(ApiException) as exc:
        core.patch_namespaced_config_map("c", "default", [
            {"op": "replace", "path": "/data/x", "value": "2"},
            {"op": "test", "path": "/data/x", "value": "1"}])
    assert (exc.value.status, status_of(exc.value)["reason"]) == (422, "Invalid")
    with pytest.raises(ApiException) as missing_path:
        core.patch_namespaced_config_map("c", "default", [{"op": "remove", "path": "/data/nope"}])
    assert missing_path.value.status == 422
    assert core.read_namespaced_config_map("c", "default").data == {"x": "1"}


def test_a_patch_with_a_stale_resource_version_conflicts(kube):
    core = client.CoreV1Api(kube.api)
    created = core.create_namespaced_config_map("default", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="c")))
    core.patch_namespaced_config_map("c", "default", {"data": {"a": "1"}})
    with pytest.raises(ApiException) as exc:
        core.patch_namespaced_config_map("c", "default", {
            "metadata": {"resourceVersion": created.metadata.resource_version}, "data": {"a": "2"}})
    assert exc.value.status == 409 and status_of(exc.value)["reason"] == "Conflict"


def test_patching_a_missing_object_is_not_found(kube):
    with pytest.raises(ApiException) as exc:
        client.CoreV1Api(kube.api).patch_namespaced_config_map("ghost", "default", {"data": {"a": "1"}})
    assert exc.value.status == 404


def test_an_unsupported_patch_content_type_is_rejected_and_a_bad_patch_body_is_a_bad_request(kube):
    client.CoreV1Api(kube.api).create_namespaced_config_map(
        "default", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="c")))
    code, body = raw(kube, "PATCH", "/api/v1/namespaces/default/configmaps/c", b"data: {}", "text/plain")
    assert code == 415 and json.loads(body)["reason"] == "UnsupportedMediaType"
    code, body = raw(kube, "PATCH", "/api/v1/namespaces/default/configmaps/c", b"{oops",
                     "application/merge-patch+json")
    assert code == 400 and json.loads(body)["reason"] == "BadRequest"
    code, _ = raw(kube, "PATCH", "/api/v1/namespaces/default/configmaps/c", b'{"op": "add"}',
                  "application/json-patch+json")
    assert code == 400


# ---- server-side apply ---------------------------------------------------------------------------------------


def test_server_side_apply_creates_then_merges_and_records_managed_fields(kube):
    dyn = dynamic(kube)
    configmaps = dyn.resources.get(api_version="v1", kind="ConfigMap")
    created = dyn.server_side_apply(configmaps, body=configmap("platform", {"a": "1"}, {"app": "gpuplat"}),
                                    field_manager="gpuplat", force_conflicts=True)
    assert created.data.a == "1"
    dyn.server_side_apply(configmaps, body=configmap("platform", {"b": "2"}), field_manager="other",
                          force_conflicts=True)
    merged = client.CoreV1Api(kube.api).read_namespaced_config_map("platform", "default")
    assert merged.data == {"a": "1", "b": "2"} and merged.metadata.labels == {"app": "gpuplat"}
    entries = {m.manager: m for m in merged.metadata.managed_fields}
    assert entries.keys() == {"gpuplat", "other"}
    assert entries["gpuplat"].operation == "Apply"
    assert entries["gpuplat"].fields_v1 == {"f:data": {"f:a": {}}, "f:metadata": {"f:labels": {"f:app": {}}}}
    assert entries["other"].fields_v1 == {"f:data": {"f:b": {}}}


def test_server_side_apply_conflicts_with_another_manager_unless_forced(kube):
    dyn = dynamic(kube)
    configmaps = dyn.resources.get(api_version="v1", kind="ConfigMap")
    dyn.server_side_apply(configmaps, body=configmap("c", {"key": "mine"}), field_manager="gpuplat")
    with pytest.raises(ConflictError) as exc:
        dyn.server_side_apply(configmaps, body=configmap("c", {"key": "theirs"}), field_manager="intruder")
    assert exc.value.status == 409
    status = json.loads(exc.value.body)
    assert status["reason"] == "Conflict" and 'conflict with "gpuplat"' in status["message"]
    assert status["details"]["causes"][0]["field"] == ".data.key"
    # The same value is no conflict: both managers then own the field.
    dyn.server_side_apply(configmaps, body=configmap("c", {"key": "mine"}), field_manager="intruder")
    forced = dyn.server_side_apply(configmaps, body=configmap("c", {"key": "theirs"}), field_manager="intruder",
                                   force_conflicts=True)
    assert forced.data.key == "theirs"
    owners = {m.manager: m.fields_v1 for m in client.CoreV1Api(kube.api).read_namespaced_config_map(
        "c", "default").metadata.managed_fields}
    assert owners == {"intruder": {"f:data": {"f:key": {}}}}


def test_server_side_apply_removes_the_fields_a_manager_stops_applying(kube):
    dyn = dynamic(kube)
    configmaps = dyn.resources.get(api_version="v1", kind="ConfigMap")
    dyn.server_side_apply(configmaps, body=configmap("c", {"a": "1", "b": "2"}, {"x": "1"}), field_manager="gpuplat")
    dyn.server_side_apply(configmaps, body=configmap("c", {"shared": "s"}), field_manager="other")
    dyn.server_side_apply(configmaps, body=configmap("c", {"a": "1", "shared": "s"}), field_manager="gpuplat")
    cm = client.CoreV1Api(kube.api).read_namespaced_config_map("c", "default")
    assert cm.data == {"a": "1", "shared": "s"}
    assert cm.metadata.labels is None


def test_server_side_apply_removes_a_list_item_the_manager_stops_applying(kube):
    dyn = dynamic(kube)
    daemonsets = dyn.resources.get(api_version="apps/v1", kind="DaemonSet")
    body = client.ApiClient().sanitize_for_serialization(daemonset())
    body.update(apiVersion="apps/v1", kind="DaemonSet")
    dyn.server_side_apply(daemonsets, body=body, field_manager="gpuplat")
    body["spec"]["template"]["spec"]["containers"] = [{"name": "main", "image": "agent:2"}]
    applied = dyn.server_side_apply(daemonsets, body=body, field_manager="gpuplat")
    assert [(c.name, c.image, c.args) for c in applied.spec.template.spec.containers] == [("main", "agent:2", None)]
    assert applied.metadata.generation == 2


def test_reapplying_the_same_configuration_changes_nothing(kube):
    dyn = dynamic(kube)
    daemonsets = dyn.resources.get(api_version="apps/v1", kind="DaemonSet")
    body = client.ApiClient().sanitize_for_serialization(daemonset())
    body.update(apiVersion="apps/v1", kind="DaemonSet")
    first = dyn.server_side_apply(daemonsets, body=body, field_manager="gpuplat", force_conflicts=True)
    again = dyn.server_side_apply(daemonsets, body=body, field_manager="gpuplat", force_conflicts=True)
    assert again.metadata.resourceVersion == first.metadata.resourceVersion
    assert again.metadata.generation == 1
    fields = again.to_dict()["metadata"]["managedFields"][0]["fieldsV1"]
    assert set(fields["f:spec"]["f:template"]["f:spec"]["f:containers"]) == {'k:{"name":"main"}',
                                                                              'k:{"name":"sidecar"}'}


def test_an_imperative_change_to_an_applied_field_takes_it_over(kube):
    dyn = dynamic(kube)
    configmaps = dyn.resources.get(api_version="v1", kind="ConfigMap")
    dyn.server_side_apply(configmaps, body=configmap("c", {"replicas": "1"}), field_manager="gpuplat")
    client.CoreV1Api(kube.api).patch_namespaced_config_map("c", "default", {"data": {"replicas": "5"}},
                                                           field_manager="kubectl-edit")
    with pytest.raises(ConflictError) as exc:
        dyn.server_side_apply(configmaps, body=configmap("c", {"replicas": "1"}), field_manager="gpuplat")
    assert 'conflict with "kubectl-edit"' in json.loads(exc.value.body)["message"]
    restored = dyn.server_side_apply(configmaps, body=configmap("c", {"replicas": "1"}), field_manager="gpuplat",
                                     force_conflicts=True)
    assert restored.data.replicas == "1"


def test_drift_through_the_admin_api_conflicts_with_an_unforced_apply(kube):
    from .test_kube_api import CLUSTER, admin_post

    dyn = dynamic(kube)
    configmaps = dyn.resources.get(api_version="v1", kind="ConfigMap")
    dyn.server_side_apply(configmaps, body=configmap("c", {"a": "1"}, {"owner": "gpuplat"}), field_manager="gpuplat")
    admin_post(kube, f"/sandbox/kube/{CLUSTER}/drift", {"apiVersion": "v1", "kind": "ConfigMap",
                                                         "namespace": "default", "name": "c", "action": "label",
                                                         "key": "owner", "value": "human"})
    with pytest.raises(ConflictError):
        dyn.server_side_apply(configmaps, body=configmap("c", {"a": "1"}, {"owner": "gpuplat"}),
                              field_manager="gpuplat")
    fixed = dyn.server_side_apply(configmaps, body=configmap("c", {"a": "1"}, {"owner": "gpuplat"}),
                                  field_manager="gpuplat", force_conflicts=True)
    assert fixed.metadata.labels.owner == "gpuplat"


def test_server_side_apply_needs_a_field_manager_and_accepts_yaml(kube):
    path = "/api/v1/namespaces/default/configmaps/y"
    code, body = raw(kube, "PATCH", path, b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: y}\n",
                     "application/apply-patch+yaml")
    assert code == 400 and "fieldManager" in json.loads(body)["message"]
    code, body = raw(kube, "PATCH", path + "?fieldManager=me",
                     b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: y\ndata:\n  enabled: 'true'\n",
                     "application/apply-patch+yaml")
    assert code == 201, body
    assert client.CoreV1Api(kube.api).read_namespaced_config_map("y", "default").data == {"enabled": "true"}
    code, body = raw(kube, "PATCH", path + "?fieldManager=me", b"metadata: {name: y}\n",
                     "application/apply-patch+yaml")
    assert code == 400  # apiVersion and kind are required in an applied configuration


def test_server_side_apply_with_dry_run_stores_nothing(kube):
    dyn = dynamic(kube)
    configmaps = dyn.resources.get(api_version="v1", kind="ConfigMap")
    preview = dyn.server_side_apply(configmaps, body=configmap("c", {"a": "1"}), field_manager="gpuplat",
                                    dry_run="All")
    assert preview.data.a == "1"
    assert client.CoreV1Api(kube.api).list_namespaced_config_map("default").items == []
