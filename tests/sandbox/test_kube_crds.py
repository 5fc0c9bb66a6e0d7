"""CustomResourceDefinitions: a custom resource exists (discovery, CRUD) only once its CRD does."""

from __future__ import annotations

import json
import shutil

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import ResourceNotFoundError

from .test_kube_api import kube, kubectl, raw, status_of  # noqa: F401  (the shared cluster fixture)

SNAPSHOT_GROUP = "snapshot.storage.k8s.io"


def crd(group: str, plural: str, kind: str, scope: str, versions=("v1",), status: bool = False,
        short_names=()) -> client.V1CustomResourceDefinition:
    schema = client.V1CustomResourceValidation(open_apiv3_schema=client.V1JSONSchemaProps(
        type="object", x_kubernetes_preserve_unknown_fields=True))
    return client.V1CustomResourceDefinition(
        metadata=client.V1ObjectMeta(name=f"{plural}.{group}"),
        spec=client.V1CustomResourceDefinitionSpec(
            group=group, scope=scope,
            names=client.V1CustomResourceDefinitionNames(plural=plural, kind=kind, short_names=list(short_names)),
            versions=[client.V1CustomResourceDefinitionVersion(
                name=v, served=True, storage=(i == 0), schema=schema,
                subresources=client.V1CustomResourceSubresources(status={}) if status else None)
                for i, v in enumerate(versions)]))


def snapshot_class_crd():
    return crd(SNAPSHOT_GROUP, "volumesnapshotclasses", "VolumeSnapshotClass", "Cluster", short_names=("vsclass",))


def model_crd():
    # Not an Argo CD Application: the simulated Argo CD controller would write their status itself.
    return crd("serving.example.com", "models", "Model", "Namespaced", versions=("v1alpha1",), status=True)


def snapshot_class(name: str = "gke-pd-snapshotclass") -> dict:
    return {"apiVersion": f"{SNAPSHOT_GROUP}/v1", "kind": "VolumeSnapshotClass",
            "metadata": {"name": name, "annotations": {"snapshot.storage.kubernetes.io/is-default-class": "true"}},
            "driver": "pd.csi.storage.gke.io", "deletionPolicy": "Delete"}


def test_a_custom_resource_is_not_found_before_its_crd_exists(kube):
    custom = client.CustomObjectsApi(kube.api)
    with pytest.raises(ApiException) as listed:
        custom.list_cluster_custom_object(SNAPSHOT_GROUP, "v1", "volumesnapshotclasses")
    assert listed.value.status == 404 and status_of(listed.value)["reason"] == "NotFound"
    with pytest.raises(ApiException) as created:
        custom.create_cluster_custom_object(SNAPSHOT_GROUP, "v1", "volumesnapshotclasses", snapshot_class())
    assert created.value.status == 404
    assert SNAPSHOT_GROUP not in [g.name for g in client.ApisApi(kube.api).get_api_versions().groups]
    assert raw(kube, "GET", f"/apis/{SNAPSHOT_GROUP}/v1")[0] == 404


def test_creating_a_crd_establishes_it_and_adds_its_resource_to_discovery(kube):
    ext = client.ApiextensionsV1Api(kube.api)
    created = ext.create_custom_resource_definition(snapshot_class_crd())
    assert {c.type: c.status for c in created.status.conditions} == {"NamesAccepted": "True", "Established": "True"}
    assert created.status.accepted_names.kind == "VolumeSnapshotClass"
    assert created.status.stored_versions == ["v1"]
    assert [c.metadata.name for c in ext.list_custom_resource_definition().items] == [
        f"volumesnapshotclasses.{SNAPSHOT_GROUP}"]

    groups = {g.name: g for g in client.ApisApi(kube.api).get_api_versions().groups}
    assert groups[SNAPSHOT_GROUP].preferred_version.version == "v1"
    listed = client.CustomObjectsApi(kube.api).get_api_resources(SNAPSHOT_GROUP, "v1").resources
    assert [(r.name, r.kind, r.namespaced, r.short_names) for r in listed] == [
        ("volumesnapshotclasses", "VolumeSnapshotClass", False, ["vsclass"])]


def test_custom_objects_support_crud_once_the_crd_exists(kube):
    client.ApiextensionsV1Api(kube.api).create_custom_resource_definition(snapshot_class_crd())
    custom = client.CustomObjectsApi(kube.api)
    args = (SNAPSHOT_GROUP, "v1", "volumesnapshotclasses")
    created = custom.create_cluster_custom_object(*args, snapshot_class())
    assert created["metadata"]["uid"] and created["driver"] == "pd.csi.storage.gke.io"
    got = custom.get_cluster_custom_object(*args, "gke-pd-snapshotclass")
    assert got["deletionPolicy"] == "Delete"
    patched = custom.patch_cluster_custom_object(*args, "gke-pd-snapshotclass", {"deletionPolicy": "Retain"})
    assert patched["deletionPolicy"] == "Retain"
    patched["parameters"] = {"storage-locations": "europe-west4"}
    replaced = custom.replace_cluster_custom_object(*args, "gke-pd-snapshotclass", patched)
    assert replaced["parameters"] == {"storage-locations": "europe-west4"}
    assert [o["metadata"]["name"] for o in custom.list_cluster_custom_object(*args)["items"]] == [
        "gke-pd-snapshotclass"]
    custom.delete_cluster_custom_object(*args, "gke-pd-snapshotclass")
    with pytest.raises(ApiException) as exc:
        custom.get_cluster_custom_object(*args, "gke-pd-snapshotclass")
    assert exc.value.status == 404
    assert status_of(exc.value)["message"] == f'volumesnapshotclasses.{SNAPSHOT_GROUP} "gke-pd-snapshotclass" not found'


def test_namespaced_custom_objects_keep_status_for_the_status_subresource(kube):
    client.ApiextensionsV1Api(kube.api).create_custom_resource_definition(model_crd())
    custom = client.CustomObjectsApi(kube.api)
    args = ("serving.example.com", "v1alpha1", "default", "models")
    model = {"apiVersion": "serving.example.com/v1alpha1", "kind": "Model",
             "metadata": {"name": "llama", "labels": {"layer": "serving"}}, "spec": {"gpus": 1}}
    custom.create_namespaced_custom_object(*args, model)
    ignored = custom.patch_namespaced_custom_object(*args, "llama", {"status": {"phase": "Ready"}})
    assert "status" not in ignored
    ready = custom.patch_namespaced_custom_object_status(*args, "llama", {"status": {
        "phase": "Ready", "replicas": 1}})
    assert ready["status"] == {"phase": "Ready", "replicas": 1}
    assert ready["metadata"]["generation"] == 1
    assert custom.get_namespaced_custom_object_status(*args, "llama")["status"]["phase"] == "Ready"
    respecced = custom.patch_namespaced_custom_object(*args, "llama", {"spec": {"gpus": 2}})
    assert respecced["metadata"]["generation"] == 2 and respecced["status"]["phase"] == "Ready"
    selected = custom.list_namespaced_custom_object(*args, label_selector="layer in (platform,serving)")
    assert [o["metadata"]["name"] for o in selected["items"]] == ["llama"]
    everywhere = custom.list_cluster_custom_object("serving.example.com", "v1alpha1", "models")
    assert len(everywhere["items"]) == 1
    with pytest.raises(ApiException) as exc:
        custom.create_namespaced_custom_object("serving.example.com", "v1alpha1", "nowhere", "models", model)
    assert exc.value.status == 404  # the namespace does not exist


def test_deleting_a_crd_removes_its_resource_and_its_objects(kube):
    ext = client.ApiextensionsV1Api(kube.api)
    ext.create_custom_resource_definition(snapshot_class_crd())
    custom = client.CustomObjectsApi(kube.api)
    custom.create_cluster_custom_object(SNAPSHOT_GROUP, "v1", "volumesnapshotclasses", snapshot_class())
    ext.delete_custom_resource_definition(f"volumesnapshotclasses.{SNAPSHOT_GROUP}")
    with pytest.raises(ApiException) as exc:
        custom.list_cluster_custom_object(SNAPSHOT_GROUP, "v1", "volumesnapshotclasses")
    assert exc.value.status == 404
    ext.create_custom_resource_definition(snapshot_class_crd())
    assert custom.list_cluster_custom_object(SNAPSHOT_GROUP, "v1", "volumesnapshotclasses")["items"] == []


def test_a_crd_named_other_than_plural_dot_group_is_invalid(kube):
    bad = snapshot_class_crd()
    bad.metadata.name = "snapshotclasses"
    with pytest.raises(ApiException) as exc:
        client.ApiextensionsV1Api(kube.api).create_custom_resource_definition(bad)
    assert (exc.value.status, status_of(exc.value)["reason"]) == (422, "Invalid")


def test_the_preferred_version_is_the_most_stable_served_one(kube):
    client.ApiextensionsV1Api(kube.api).create_custom_resource_definition(
        crd("example.com", "widgets", "Widget", "Namespaced", versions=("v1alpha1", "v1beta2", "v1")))
    group = {g.name: g for g in client.ApisApi(kube.api).get_api_versions().groups}["example.com"]
    assert [v.version for v in group.versions] == ["v1", "v1beta2", "v1alpha1"]
    assert group.preferred_version.version == "v1"


def test_the_dynamic_client_discovers_a_new_crd_and_applies_its_objects(kube):
    dyn = DynamicClient(kube.api, cache_file=str(kube.tmp_path / "discovery.json"))
    with pytest.raises(ResourceNotFoundError):
        dyn.resources.get(api_version=f"{SNAPSHOT_GROUP}/v1", kind="VolumeSnapshotClass")
    client.ApiextensionsV1Api(kube.api).create_custom_resource_definition(snapshot_class_crd())
    dyn = DynamicClient(kube.api, cache_file=str(kube.tmp_path / "discovery-after.json"))
    classes = dyn.resources.get(api_version=f"{SNAPSHOT_GROUP}/v1", kind="VolumeSnapshotClass")
    applied = dyn.server_side_apply(classes, body=snapshot_class(), field_manager="gpuplat", force_conflicts=True)
    assert applied.driver == "pd.csi.storage.gke.io"
    assert [o.metadata.name for o in dyn.get(classes).items] == ["gke-pd-snapshotclass"]


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kubectl_sees_a_custom_resource_by_its_short_name(kube):
    assert kubectl(kube, "get", "vsclass").returncode != 0
    client.ApiextensionsV1Api(kube.api).create_custom_resource_definition(snapshot_class_crd())
    manifest = kube.tmp_path / "vsclass.json"
    manifest.write_text(json.dumps(snapshot_class()))
    applied = kubectl(kube, "apply", "--server-side", "-f", str(manifest))
    assert applied.returncode == 0, applied.stderr
    result = kubectl(kube, "get", "vsclass", "-o", "json")
    assert result.returncode == 0, result.stderr
    assert [o["metadata"]["name"] for o in json.loads(result.stdout)["items"]] == ["gke-pd-snapshotclass"]
