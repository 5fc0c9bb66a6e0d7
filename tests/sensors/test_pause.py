"""Pause to $0 and resume (the seed's `make pause` / `make resume`, scripts/pause.sh and resume.sh), on
the sandbox through the official clients, with the drift sensor watching."""

from __future__ import annotations

import pytest
from google.cloud import secretmanager_v1
from kubernetes import client

from substrate.approval import DESTROY_TAG
from sensors.drift import build_drift_sensor
from tests.sandbox.test_leftovers import GATEWAY_CRD
from tests.sensors.test_alerts import SECRET, receiver, store_url  # noqa: F401,F811 - receiver is a fixture
from tests.conftest import admin, client_options, compute_leftovers, kube_api
from tests.sensors.conftest import GKE_CLUSTER, Ticker, latest_check, runs, skip_text

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
    assert not runs(tick) and not tick.asset_events, skip_text(tick)
    gp.admin.reset()
    assert gp.materialize(tags=DESTROY).success and gp.admin.calls()["_total"]["mutate"] == 0  # paused stays paused

    gp.configure()  # lifecycle: running again
    resumed = gp.materialize()
    assert resumed.success and all(gp.checks(resumed).values()), gp.checks(resumed)
    assert secrets_state(gp) == before  # the same values, 0 versions added
    assert not runs(sensor.tick())


def claim(name: str, reclaim: str = "Delete") -> dict:
    return {"metadata": {"name": name, "annotations": {"sandbox.gpuplat.io/reclaim-policy": reclaim}},
            "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "standard-rwo",
                     "resources": {"requests": {"storage": "20Gi"}}}}


def workloads(gp, tmp_path, cluster: str = GKE_CLUSTER, gateway_class: str = "gke-l7-global-external-managed") -> dict:
    """What a running platform leaves in the project, as the fork's apps make it: a Gateway (its CRD is
    the fork's platform-core/gateway-api-crds app) and its load balancer, a disk behind a live claim, and
    a detached disk: a claim of a Retain class deleted, its volume Released (a model cache kept on
    purpose). Returns the disks by role and the load balancer's name, as the Gateway's annotation says."""
    api = kube_api(gp.admin.urls, tmp_path, cluster)
    client.ApiextensionsV1Api(api).create_custom_resource_definition(GATEWAY_CRD)
    client.CustomObjectsApi(api).create_namespaced_custom_object(
        "gateway.networking.k8s.io", "v1", "default", "gateways", {
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway", "metadata": {"name": "public"},
            "spec": {"gatewayClassName": gateway_class, "listeners": [{"name": "https", "protocol": "HTTPS", "port": 443}]}})
    core = client.CoreV1Api(api)
    core.create_namespaced_persistent_volume_claim("default", claim("litellm-pg-1"))
    core.create_namespaced_persistent_volume_claim("default", claim("model-cache", "Retain"))
    disks = {c.metadata.name: c.spec.volume_name for c in core.list_namespaced_persistent_volume_claim("default").items}
    core.delete_namespaced_persistent_volume_claim("model-cache", "default")
    gateway = client.CustomObjectsApi(api).get_namespaced_custom_object(
        "gateway.networking.k8s.io", "v1", "default", "gateways", "public")
    rule = gateway["metadata"]["annotations"]["networking.gke.io/forwarding-rules"]
    return {"live": disks["litellm-pg-1"], "detached": disks["model-cache"], "load_balancer": rule.rsplit("/", 1)[1]}


@pytest.mark.slow
def test_a_pause_deletes_only_its_own_environment_s_disks_and_load_balancers(gp, tmp_path, fast_clock):
    """Two environments in one project (as the benchmarks and shared lab projects have them), each with a
    disk behind a live claim, a detached disk and a Gateway load balancer. Pausing one deletes exactly
    its own, read from its cluster's PersistentVolumes (the PD CSI driver's volumeHandle) and its
    Gateways' networking.gke.io annotations; the other stays green, and the paused one's audit passes."""
    gp.configure("sandbox2", cluster={"name": "ai-dev2"})
    assert gp.materialize().success and gp.materialize(env="sandbox2").success
    mine = workloads(gp, tmp_path)
    theirs = workloads(gp, tmp_path, GKE_CLUSTER.replace("ai-dev", "ai-dev2"), "gke-l7-regional-external-managed")
    before = compute_leftovers(gp.admin.urls, PROJECT)
    assert {mine["live"], mine["detached"], theirs["live"], theirs["detached"]} <= set(before["disks"])
    assert len(before["forwardingRules"]) == len(before["addresses"]) == 2

    gp.configure(lifecycle="paused")
    assert gp.materialize(tags=DESTROY).success
    after = compute_leftovers(gp.admin.urls, PROJECT)
    assert after["disks"] == sorted([theirs["live"], theirs["detached"]])
    assert after["forwardingRules"] == after["addresses"] == [theirs["load_balancer"]]
    paused = gp.checks(gp.drift_checks())
    assert paused[("cluster", "paused_costs_nothing")] and all(paused.values()), paused
    other = gp.checks(gp.drift_checks(env="sandbox2"))
    assert all(other.values()), {k: v for k, v in other.items() if not v}
    audit = latest_check(gp, "cluster", "paused_costs_nothing")
    kept = audit.metadata["kept_on_purpose"].value
    assert "Secret Manager secret(s) of sandbox" in kept and "secret-manager/pricing" in kept
    assert "gcloud secrets delete" in kept


@pytest.mark.slow
def test_the_seed_s_safety_steps_release_the_load_balancer_clear_the_blocking_pdb_and_an_undeleted_disk_fails_the_audit(
        gp, tmp_path, fast_clock, receiver):
    """pause.sh [1/5]-[4/6]: Argo CD suspended, Gateways deleted and their forwarding rules and addresses
    waited for, CloudNativePG-style PDBs cleared (a PDB with 0 allowed disruptions hangs the node-pool
    drain: container v1 NodePool.NodeDrainConfig.respect_pdb_during_node_pool_deletion), the
    environment's disks deleted; one the pause could not delete fails paused_costs_nothing by name and
    price, and a disk of someone else's is neither deleted nor counted. The environment's notifier hears
    of what is still billed, once."""
    alerts = {"alerts": {"kind": "webhook", "url_secret": SECRET}}
    gp.configure(substrate=alerts)
    assert gp.materialize().success
    store_url(gp, receiver.url)
    disks = workloads(gp, tmp_path)
    core = client.CoreV1Api(kube_api(gp.admin.urls, tmp_path, GKE_CLUSTER))
    cpu_node = next(n.metadata.name for n in core.list_node().items
                    if n.metadata.labels.get("cloud.google.com/gke-nodepool") == "default-pool")
    admin(gp.admin.urls, "POST", "/sandbox/blockers", {"cluster": GKE_CLUSTER, "node": cpu_node, "kind": "pdb-zero"})
    # Someone else's disk in the same project, named as the seed's audit pattern (`name~pvc`) would take it.
    admin(gp.admin.urls, "POST", "/sandbox/compute/disks", {
        "project": PROJECT, "scope": "zones/us-central1-a", "name": "pvc-sandbox-scratch", "sizeGb": "100",
        "type": "zones/us-central1-a/diskTypes/pd-balanced"})
    gp.configure(lifecycle="paused", substrate=alerts)
    gp.admin.reset()
    gp.admin.fault("compute", "Delete", "quota")  # the first disk deletion is refused
    failed = gp.materialize(tags=DESTROY, raise_on_error=False)
    assert not failed.success
    kube_calls = gp.admin.calls()["kubernetes"]["methods"]
    assert kube_calls.get("delete:gateways") == 1 and kube_calls.get("delete:poddisruptionbudgets", 0) >= 1
    assert gp.admin.calls()["container"]["methods"].get("DeleteNodePool") == 2  # default-pool drained, not hung
    left = compute_leftovers(gp.admin.urls, PROJECT)
    assert left["forwardingRules"] == left["addresses"] == []
    assert "pvc-sandbox-scratch" in left["disks"] and len(left["disks"]) == 2
    (undeleted,) = set(left["disks"]) - {"pvc-sandbox-scratch"}
    assert undeleted in disks.values()
    audit = next(e for e in gp.drift_checks(raise_on_error=False).get_asset_check_evaluations()
                 if e.check_name == "paused_costs_nothing")
    assert not audit.passed and f"disk {undeleted}" in audit.description and "USD/h" in audit.description
    assert "pvc-sandbox-scratch" not in audit.description and audit.metadata["leftover_cost_per_hour"].value > 0
    [billed] = [m["body"] for m in receiver.messages]  # the failed pause's own check, then the audit: one message
    assert billed["finding"] == "pause-billing" and f"disk {undeleted}" in billed["text"], billed
    gp.drift_checks(raise_on_error=False)  # the same leftover, checked again: no second message
    assert len(receiver.messages) == 1
    assert gp.materialize(tags=DESTROY).success  # the same pause, again: it finishes from its record
    assert compute_leftovers(gp.admin.urls, PROJECT)["disks"] == ["pvc-sandbox-scratch"]
    assert all(gp.checks(gp.drift_checks()).values())


PAUSE_STEPS = [  # (api, method the sandbox counts) of each step of the pause, in its order
    ("kubernetes", "patch:statefulsets"),  # [1] Argo CD suspended
    ("kubernetes", "delete:gateways"),  # [2] Gateways deleted
    ("kubernetes", "delete:poddisruptionbudgets"),  # [3] PDBs cleared
    ("container", "DeleteNodePool"),  # [4] node pools
    ("container", "DeleteCluster"),  # [5] the cluster
    ("compute", "Delete"),  # [6] the environment's disks
]


def argo_replicas(gp, tmp_path) -> dict[str, int]:
    apps = client.AppsV1Api(kube_api(gp.admin.urls, tmp_path, GKE_CLUSTER))
    return {**{s.metadata.name: s.spec.replicas for s in apps.list_namespaced_stateful_set("argocd").items},
            **{d.metadata.name: d.spec.replicas for d in apps.list_namespaced_deployment("argocd").items
               if d.metadata.name.endswith("applicationset-controller")}}


@pytest.mark.slow
@pytest.mark.parametrize("api,method", PAUSE_STEPS, ids=[m for _, m in PAUSE_STEPS])
def test_a_pause_that_failed_at_a_step_is_undone_by_resume_and_checks_fail_until_it_is(gp, tmp_path, fast_clock,
                                                                                      api, method):
    """A pause refused at one of its steps (quota: not retried), then set back to `running`: what the
    pause changed (Argo CD's controllers scaled to 0, pools or the cluster gone) fails a check until a
    materialization gives it back; then every check is green and a rerun changes nothing."""
    assert gp.materialize().success
    replicas = argo_replicas(gp, tmp_path)
    assert replicas and all(replicas.values()), replicas
    workloads(gp, tmp_path)
    core = client.CoreV1Api(kube_api(gp.admin.urls, tmp_path, GKE_CLUSTER))
    cpu_node = next(n.metadata.name for n in core.list_node().items
                    if n.metadata.labels.get("cloud.google.com/gke-nodepool") == "default-pool")
    admin(gp.admin.urls, "POST", "/sandbox/blockers", {"cluster": GKE_CLUSTER, "node": cpu_node, "kind": "pdb-zero"})
    gp.configure(lifecycle="paused")
    gp.admin.reset()
    gp.admin.fault(api, method, "quota", count=1)
    assert not gp.materialize(tags=DESTROY, raise_on_error=False).success
    assert gp.admin.calls()[api]["methods"].get(method), f"{api} {method} was never called"
    assert gp.admin.call("GET", "/sandbox/faults")["faults"] == [], f"the fault on {api} {method} never fired"
    changed = method != "patch:statefulsets"  # refused at the first step: nothing was changed

    gp.configure()  # lifecycle: running again
    before = gp.checks(gp.drift_checks(raise_on_error=False))
    failing = sorted(k for k, passed in before.items() if not passed)
    assert bool(failing) == changed, failing
    if changed:
        assert ("cluster", "in_sync") in failing, failing
    resumed = gp.materialize()
    assert resumed.success and all(gp.checks(resumed).values()), gp.checks(resumed)
    assert argo_replicas(gp, tmp_path) == replicas
    gp.admin.reset()
    assert all(gp.checks(gp.drift_checks()).values())
    assert gp.materialize().success and gp.admin.calls()["_total"]["mutate"] == 0
