"""Pause to $0 and resume (the seed's `make pause` / `make resume`, scripts/pause.sh and resume.sh), on
the sandbox through the official clients, with the drift sensor watching."""

from __future__ import annotations

import pytest
from google.cloud import secretmanager_v1
from kubernetes import client

from substrate.approval import DESTROY_TAG
from sensors.drift import build_drift_sensor
from tests.conftest import admin, client_options, compute_leftovers, kube_api
from tests.sensors.conftest import GKE_CLUSTER, Ticker, evaluations, runs

PROJECT = "gpuplat-test"
DESTROY = {DESTROY_TAG: "true"}


def secrets_state(gp) -> dict:
    """Every secret's versions, and the latest value's length and a digest of it (never the value)."""
    import hashlib
    sm = secretmanager_v1.SecretManagerServiceClient(**client_options(gp.admin.urls, "secretmanager"))
    out = {}
    for secret in sm.list_secrets(parent=f"projects/{PROJECT}"):
        versions = sorted(v.name for v in sm.list_secret_versions(parent=secret.name))
        data = sm.access_secret_version(name=f"{secret.name}/versions/latest").payload.data
        out[secret.name.rsplit("/", 1)[1]] = (versions, hashlib.sha256(data).hexdigest())
    return out


def leftovers(gp) -> list[str]:
    """Every forwarding rule, address and disk of the project, as `<collection> <name>`."""
    return [f"{kind} {name}" for kind, names in compute_leftovers(gp.admin.urls, PROJECT).items() for name in names]


def test_quick_start_pause_resume_keeps_the_secrets_and_the_sensor_rebuilds_nothing(gp):
    """pause.sh: "GCP Secret Manager values survive (not in TF) → ESO re-materializes them on resume";
    resume.sh: "The secret backend's values survived the pause ... no re-seeding"."""
    started = gp.materialize()
    assert started.success
    # What it costs while it runs, from the (sandbox's) Billing Catalog: the GKE fee and every node.
    cost = started.asset_materializations_for_node("cluster")[0].metadata
    assert cost["cost_currency"].value == "USD" and cost["cost_unknown"].value == ""
    assert "Zonal Kubernetes Clusters: 0.1000/h" in cost["cost_lines"].value and "node " in cost["cost_lines"].value
    assert cost["cost_per_hour"].value > 0.1
    assert cost["cost_per_month"].value == pytest.approx(cost["cost_per_hour"].value * 730, abs=0.01)
    before = secrets_state(gp)
    sensor = Ticker(build_drift_sensor(), gp)
    assert not runs(sensor.tick())

    gp.configure(lifecycle="paused")
    gp.admin.reset()
    refused = gp.materialize(raise_on_error=False)
    assert not refused.success and gp.admin.calls()["_total"]["mutate"] == 0
    message = "\n".join(e.event_specific_data.error.message for e in refused.all_events
                        if e.event_type_value == "STEP_FAILURE")
    assert "destroy approval needed for cluster in sandbox" in message and "nothing was changed" in message
    assert "GPUPLAT_APPROVE_DESTROY=1" in message and "gpuplat/approve-destroy=true" in message
    assert "delete GKE cluster ai-dev" in message and "delete node pool gpu-l4" in message

    paused = gp.materialize(tags=DESTROY)
    assert paused.success
    meta = paused.asset_materializations_for_node("cluster")[0].metadata
    assert meta["destroy_approval"].value == "run tag gpuplat/approve-destroy=true"
    checks = gp.checks(gp.drift_checks())
    assert checks[("cluster", "paused_costs_nothing")] and all(checks.values()), checks
    assert leftovers(gp) == []
    assert secrets_state(gp) == before  # kept, not a version added
    gp.admin.reset()
    tick = sensor.tick()
    assert not runs(tick) and not [e for e in evaluations(tick) if not e.passed]
    gp.admin.reset()
    assert gp.materialize(tags=DESTROY).success and gp.admin.calls()["_total"]["mutate"] == 0  # paused stays paused

    gp.configure()  # lifecycle: running again
    resumed = gp.materialize()
    assert resumed.success and all(gp.checks(resumed).values()), gp.checks(resumed)
    assert secrets_state(gp) == before  # the same values, 0 versions added
    assert not runs(sensor.tick())


def test_the_seed_s_safety_steps_release_the_load_balancer_clear_the_blocking_pdb_and_an_orphan_disk_fails_the_audit(
        gp, tmp_path, fast_clock):
    """pause.sh [1/5]-[4/6]: Argo CD suspended, Gateways deleted and their forwarding rules and addresses
    waited for, CloudNativePG-style PDBs cleared (a PDB with 0 allowed disruptions hangs the node-pool
    drain: container v1 NodePool.NodeDrainConfig.respect_pdb_during_node_pool_deletion), PVC disks deleted
    in the audit; a disk that appears later fails paused_costs_nothing by name and price."""
    assert gp.materialize().success
    api = kube_api(gp.admin.urls, tmp_path, GKE_CLUSTER)
    client.ApiextensionsV1Api(api).create_custom_resource_definition({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "gateways.gateway.networking.k8s.io"},
        "spec": {"group": "gateway.networking.k8s.io", "scope": "Namespaced",
                 "names": {"kind": "Gateway", "plural": "gateways", "singular": "gateway", "listKind": "GatewayList"},
                 "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {
                     "type": "object", "x-kubernetes-preserve-unknown-fields": True}}}]}})
    client.CustomObjectsApi(api).create_namespaced_custom_object("gateway.networking.k8s.io", "v1", "default", "gateways", {
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway", "metadata": {"name": "public"},
        "spec": {"gatewayClassName": "gke-l7-global-external-managed", "listeners": [
            {"name": "https", "protocol": "HTTPS", "port": 443}]}})
    core = client.CoreV1Api(api)
    core.create_namespaced_persistent_volume_claim("default", {
        "metadata": {"name": "litellm-pg-1"}, "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "standard-rwo",
                                                       "resources": {"requests": {"storage": "20Gi"}}}})
    cpu_node = next(n.metadata.name for n in core.list_node().items
                    if n.metadata.labels.get("cloud.google.com/gke-nodepool") == "default-pool")
    admin(gp.admin.urls, "POST", "/sandbox/blockers", {"cluster": GKE_CLUSTER, "node": cpu_node, "kind": "pdb-zero"})
    assert sorted(x.split()[0] for x in leftovers(gp)) == ["addresses", "disks", "forwardingRules"]

    gp.configure(lifecycle="paused")
    gp.admin.reset()
    assert gp.materialize(tags=DESTROY).success  # the load balancer goes two simulated minutes after its Gateway
    kube_calls = gp.admin.calls()["kubernetes"]["methods"]
    assert kube_calls.get("delete:gateways") == 1 and kube_calls.get("delete:poddisruptionbudgets", 0) >= 1
    assert gp.admin.calls()["container"]["methods"].get("DeleteNodePool") == 2  # default-pool drained, not hung
    assert leftovers(gp) == []

    # Something the pause did not make: a disk named for the environment, created by hand.
    admin(gp.admin.urls, "POST", "/sandbox/compute/disks", {
        "project": PROJECT, "scope": "zones/us-central1-a", "name": "pvc-sandbox-scratch", "sizeGb": "100",
        "type": "zones/us-central1-a/diskTypes/pd-balanced"})
    audit = next(e for e in gp.drift_checks(raise_on_error=False).get_asset_check_evaluations()
                 if e.check_name == "paused_costs_nothing")
    assert not audit.passed and "disk pvc-sandbox-scratch" in audit.description and "USD/h" in audit.description
    assert audit.metadata["leftover_cost_per_hour"].value > 0

