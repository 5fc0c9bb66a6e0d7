"""The scale-to-zero guard and the `scales_to_zero` check, against the sandbox's simulated autoscaler.

A GPU workload scales the pool up; deleting it leaves an idle GPU node that the simulated autoscaler
removes after its 10-minute window unless a blocker holds it. The guard's clock is the sandbox's
simulated clock, so the tests skip the 20-minute grace period without sleeping. The guard reports (an
observation and a checks-only run of `scales_to_zero`); it never starts a repair run: a pod blocker
needs a person, and a pool min drifted above 0 is the drift sensor's.
"""

from __future__ import annotations

import pytest
from dagster import AssetKey
from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import billing_v1

from substrate.approval import SENSOR_TAG
from substrate.config import parse_config
from substrate.piece import Run
from substrate.scale_to_zero import (
    LOCAL_STORAGE,
    MIN_SIZE,
    NO_PLACE,
    NOT_ENOUGH_PDB,
    NOT_REPLICATED,
    NOT_SAFE_TO_EVICT,
    SAFE_TO_EVICT,
    SAFE_TO_EVICT_LOCAL,
    SCALE_DOWN_DISABLED_REASON,
    UNMOVABLE_KUBE_SYSTEM,
    pod_blockers,
)
from substrate.prices import accelerator_sku_name, node_price
from resources.models import NodeState, PdbState, PodState, Taint
from sensors.scale_to_zero import TRIGGER, build_scale_to_zero_sensor

from .conftest import GKE_CLUSTER, Ticker, latest_check, observations, runs, skip_text

GRACE_S = 20 * 60


# ---- the rules, as a table ------------------------------------------------------------------------
def pod(name="p", namespace="default", owners=("ReplicaSet",), annotations=None, volumes=(), selector=None,
        priority=0, tolerations=({"key": None, "effect": None},), labels=None, requests=None) -> PodState:
    return PodState(name=name, namespace=namespace, node="gpu-1", phase="Running", labels=labels or {"app": name},
                    annotations=annotations or {}, owner_kinds=tuple(owners), priority=priority, gpu_request=0,
                    requests=requests or {"cpu": 0.01}, volumes=tuple(volumes), node_selector=selector or {},
                    has_affinity=False, tolerations=tuple(tolerations))


CPU_NODE = NodeState(name="cpu-1", provider_id="gce://p/z/cpu-1", labels={"kubernetes.io/hostname": "cpu-1"},
                     annotations={}, taints=(), allocatable={"cpu": "3920m", "memory": "13948519Ki"},
                     unschedulable=False, ready=True, created="")
GPU_TAINTED = NodeState(name="gpu-2", provider_id="gce://p/z/gpu-2", labels={"kubernetes.io/hostname": "gpu-2"},
                        annotations={}, taints=(Taint("nvidia.com/gpu", "present", "NoSchedule"),),
                        allocatable={"cpu": "3920m", "memory": "13948519Ki", "nvidia.com/gpu": "1"},
                        unschedulable=False, ready=True, created="")
ZERO_PDB = PdbState("guard", "default", {"app": "p"}, 0)
ONE_PDB = PdbState("guard", "default", {"app": "p"}, 1)
KS_ONE_PDB = PdbState("guard", "kube-system", {"app": "p"}, 1)

CASES = {
    "a Deployment's pod that fits elsewhere blocks nothing": (pod(), (), ()),
    "a bare pod is not replicated": (pod(owners=()), (), (NOT_REPLICATED,)),
    "a kube-system pod without a PodDisruptionBudget": (pod(namespace="kube-system"), (), (UNMOVABLE_KUBE_SYSTEM,)),
    "a kube-system pod whose PDB allows a disruption is fine": (pod(namespace="kube-system"), (KS_ONE_PDB,), ()),
    "an emptyDir on disk is local storage": (pod(volumes=[{"name": "scratch", "type": "emptyDir", "medium": ""}]), (),
                                             (LOCAL_STORAGE,)),
    "a hostPath is local storage": (pod(volumes=[{"name": "root", "type": "hostPath"}]), (), (LOCAL_STORAGE,)),
    "an emptyDir in memory is not": (pod(volumes=[{"name": "shm", "type": "emptyDir", "medium": "Memory"}]), (), ()),
    "local volumes listed in safe-to-evict-local-volumes are not": (
        pod(volumes=[{"name": "a", "type": "emptyDir", "medium": ""}, {"name": "b", "type": "hostPath"}],
            annotations={SAFE_TO_EVICT_LOCAL: "a, b"}), (), ()),
    "a local volume missing from safe-to-evict-local-volumes still blocks": (
        pod(volumes=[{"name": "a", "type": "emptyDir", "medium": ""}, {"name": "b", "type": "hostPath"}],
            annotations={SAFE_TO_EVICT_LOCAL: "a"}), (), (LOCAL_STORAGE,)),
    'safe-to-evict "false"': (pod(annotations={SAFE_TO_EVICT: "false"}), (), (NOT_SAFE_TO_EVICT,)),
    "a PodDisruptionBudget allowing no disruption": (pod(), (ZERO_PDB,), (NOT_ENOUGH_PDB,)),
    "a PodDisruptionBudget allowing one disruption is fine": (pod(), (ONE_PDB,), ()),
    "a pod pinned to its node by hostname": (pod(selector={"kubernetes.io/hostname": "gpu-1"}), (), (NO_PLACE,)),
    "a pod only the GPU taint's nodes would take, none tolerated": (
        pod(selector={"cloud.google.com/gke-accelerator": "nvidia-l4"}, tolerations=()), (), (NO_PLACE,)),
    "a pod too big for any other node": (pod(requests={"cpu": 8.0}), (), (NO_PLACE,)),
    'safe-to-evict "true" lifts the bare, kube-system and local-storage rules': (
        pod(owners=(), namespace="kube-system", annotations={SAFE_TO_EVICT: "true"},
            volumes=[{"name": "root", "type": "hostPath"}]), (), ()),
    'safe-to-evict "true" does not lift a PodDisruptionBudget': (pod(annotations={SAFE_TO_EVICT: "true"}), (ZERO_PDB,),
                                                                  (NOT_ENOUGH_PDB,)),
    "a DaemonSet's pod never blocks": (pod(owners=("DaemonSet",), namespace="kube-system",
                                           volumes=[{"name": "root", "type": "hostPath"}]), (), ()),
    "a mirror pod never blocks": (
        pod(owners=(), namespace="kube-system", annotations={"kubernetes.io/config.mirror": "x"}), (), ()),
    "an expendable pod (priority below -10) never blocks": (pod(owners=(), priority=-11), (), ()),
    "every reason of one pod is named, not only the first": (
        pod(owners=(), annotations={SAFE_TO_EVICT: "false"}, volumes=[{"name": "s", "type": "emptyDir", "medium": ""}]),
        (), (NOT_SAFE_TO_EVICT, NOT_REPLICATED, LOCAL_STORAGE)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_the_autoscalers_drain_rules(case):
    p, pdbs, expected = CASES[case]
    got = tuple(b.reason for b in pod_blockers(p, "gpu-1", pdbs, (CPU_NODE, GPU_TAINTED)))
    assert got == expected


@pytest.mark.parametrize("accelerator, name", [("nvidia-l4", "Nvidia L4 GPU"),
                                               ("nvidia-tesla-t4", "Nvidia Tesla T4 GPU"),
                                               ("nvidia-h100-80gb", "Nvidia H100 80GB GPU")])
def test_accelerator_types_map_to_billing_catalog_names(accelerator, name):
    assert accelerator_sku_name(accelerator) == name


@pytest.mark.parametrize("price, expected", [(1.35, "1.35"), (None, "no price known")])
def test_off_gke_the_price_comes_from_the_config_or_is_said_to_be_unknown(price, expected):
    env = parse_config("rack", "/envs/rack/config.yaml", {
        "cluster": {"name": "rack"}, "gpu_stack": "none", "substrate": {"kind": "hetzner", "prices": {"gpu_node_per_hour": price}}})
    got = node_price(Run(env, conn=None, log=None), GPU_TAINTED)  # off GKE nothing is asked of a cloud
    assert (f"{got.per_hour:g}" if got.per_hour is not None else got.source).startswith(expected)
    assert got.currency == "EUR"


# ---- against the sandbox --------------------------------------------------------------------------
class Pool:
    """The sandbox environment with its GPU pool materialized, and the guard's view of it (run as the
    daemon runs it: its events stored, its report runs executed)."""

    def __init__(self, gp):
        self.gp = gp
        assert gp.materialize(select=["apis_enabled", "service_accounts", "cluster", "gpu_pool"]).success
        self.ticker = Ticker(build_scale_to_zero_sensor(clock=self.now), gp, daemon=True)

    def now(self) -> float:
        return self.gp.admin.call("GET", "/sandbox/clock")["now"]

    def advance(self, minutes: float) -> None:
        self.gp.admin.call("POST", "/sandbox/clock/advance", {"seconds": minutes * 60})

    def idle_gpu_node(self) -> str:
        """A GPU workload scales the pool to one node; deleting it leaves that node idle."""
        placed = self.gp.admin.call("POST", "/sandbox/workloads/gpu", {"cluster": GKE_CLUSTER, "name": "llm"})
        node = placed["nodeName"]
        for _ in range(5):  # scale-up adds the node, the scheduler binds the pod on a later pass
            if node:
                break
            self.gp.admin.call("POST", "/sandbox/reconcile")
            node = next((p.node for p in self.kube.pods() if p.name == placed["pod"] and p.phase == "Running"), "")
        assert node, placed
        self.gp.admin.call("DELETE", "/sandbox/workloads/gpu", {"cluster": GKE_CLUSTER, "name": "llm"})
        return node

    @property
    def kube(self):
        from resources.kube import Kube
        return Kube(str(self.gp.tmp_path / "kube" / "sandbox.kubeconfig"))

    def block(self, node: str, kind: str, **extra) -> dict:
        return self.gp.admin.call("POST", "/sandbox/blockers", {"cluster": GKE_CLUSTER, "node": node, "kind": kind,
                                                                **extra})

    def gpu_nodes(self) -> list[str]:
        return [n.name for n in self.kube.nodes() if n.labels.get("cloud.google.com/gke-nodepool") == "gpu-l4"]

    def check(self):
        return latest_check(self.gp, "gpu_pool", "scales_to_zero")


@pytest.fixture
def pool(gp) -> Pool:
    return Pool(gp)


BLOCKERS = {
    "bare-pod": NOT_REPLICATED,
    "kube-system-no-pdb": UNMOVABLE_KUBE_SYSTEM,
    "local-storage": LOCAL_STORAGE,
    "safe-to-evict-false": NOT_SAFE_TO_EVICT,
    "pdb-zero": NOT_ENOUGH_PDB,
    "unmovable": NO_PLACE,
    "node-scale-down-disabled": SCALE_DOWN_DISABLED_REASON,
}


def catalog_price(gp) -> float:
    """What a g2-standard-4 with one L4 costs by the sandbox's catalog, read with Google's own client."""
    client = billing_v1.CloudCatalogClient(transport="rest", credentials=AnonymousCredentials(),
                                           client_options=ClientOptions(api_endpoint=gp.sandbox.urls()["billing"]))
    compute = next(s for s in client.list_services() if s.display_name == "Compute Engine")
    price = {}
    for sku in client.list_skus(parent=compute.name):
        rate = sku.pricing_info[0].pricing_expression.tiered_rates[-1].unit_price
        price[sku.description] = rate.units + rate.nanos / 1e9
    return (price["Nvidia L4 GPU running in Iowa"] + 4 * price["G2 Instance Core running in Iowa"]
            + 16 * price["G2 Instance Ram running in Iowa"])


def test_the_guard_sums_what_the_watched_environments_cost_now(pool):
    """Every tick says what the environments it watches cost per hour, per currency: GKE's fee and every
    node, from the Billing Catalog (the sandbox's illustrative one)."""
    text = skip_text(pool.ticker.tick())
    assert "running now: " in text and " USD/h across 1 environment(s) (sandbox " in text, text
    assert float(text.split("running now: ")[1].split(" USD/h")[0]) >= 0.10, text  # GKE's zonal fee alone


def test_a_node_idle_since_before_the_guard_first_looked_is_reported_on_that_first_tick(gp):
    """The idle clock is the cluster's (the node's creationTimestamp, or the end of its last GPU pod), not
    when the guard first looked: a guard started, or restarted with a fresh cursor, after a node sat idle
    past the grace period reports it at once. The guard's default clock is the cluster's, so on the
    sandbox it is the simulated one."""
    pool = Pool(gp)
    node = pool.idle_gpu_node()
    pool.block(node, "bare-pod")
    pool.advance(25)  # idle 25 minutes (25 minutes of simulated time, plus the wall time this test takes)
    fresh = Ticker(build_scale_to_zero_sensor(), gp, daemon=True)  # default clock: the cluster's
    [obs] = observations(fresh.tick())
    assert obs.asset_key == AssetKey("gpu_pool") and node in obs.description
    minutes = int(obs.description.split(f"{node} idle for ", 1)[1].split(" min", 1)[0])
    assert 25 <= minutes <= 27, obs.description
    check = pool.check()
    assert not check.passed and node in check.description


@pytest.mark.parametrize("kind", list(BLOCKERS))
def test_a_node_held_past_the_grace_period_is_reported_with_its_blocker_and_no_run_that_cannot_help(gp, pool, kind):
    node = pool.idle_gpu_node()
    made = pool.block(node, kind)
    first = pool.ticker.tick()
    assert not runs(first) and not first.asset_events, skip_text(first)
    pool.advance(11)  # past the autoscaler's window: a node without a blocker would be gone now
    assert node in pool.gpu_nodes()
    within = pool.ticker.tick()
    assert not runs(within) and not within.asset_events  # 11 minutes idle < 20 minutes of grace
    pool.advance(10)
    gp.admin.reset()
    stuck = pool.ticker.tick()

    [obs] = observations(stuck)
    assert (obs.asset_key, obs.partition) == (AssetKey("gpu_pool"), "sandbox")
    reason = BLOCKERS[kind]
    table = obs.metadata["blockers"].value
    if "pod" in made:
        assert f"{made['namespace']}/{made['pod']} ({reason})" in obs.metadata["blocker_pods"].value
        assert f"{made['namespace']}/{made['pod']}" in obs.description
    else:
        assert node in table and "(node)" in table
    assert {r for r in obs.metadata["blocker_reasons"].value.split(", ")} == {reason}  # nothing else is blamed
    assert obs.metadata["node_price_per_hour_usd"].value == pytest.approx(catalog_price(gp), rel=1e-6)
    assert "node_price_per_hour" not in obs.metadata and "currency" not in obs.metadata
    assert "Cloud Billing Catalog" in obs.metadata["price_source"].value
    assert "USD/h" in obs.metadata["idle_cost"].value

    # No gpu_pool run (it could not move a pod): a checks-only run of scales_to_zero, which fails the same way.
    [rr] = runs(stuck)
    assert rr.asset_selection is None and rr.partition_key == "sandbox"
    assert [k.name for k in rr.asset_check_keys] == ["scales_to_zero"]
    assert rr.tags[SENSOR_TAG] == TRIGGER and node in rr.run_key
    assert gp.admin.calls()["_total"]["mutate"] == 0
    check = pool.check()
    assert not check.passed and reason in check.metadata["blocker_reasons"].value
    repeat = pool.ticker.tick()
    assert not runs(repeat) and not repeat.asset_events  # one stuck episode, one report

    # Removing the blocker lets the autoscaler remove the node: the failure clears.
    gp.admin.call("DELETE", "/sandbox/blockers", {"cluster": GKE_CLUSTER})
    pool.advance(11)
    assert node not in pool.gpu_nodes()
    cleared = pool.ticker.tick()
    assert [k.name for r in runs(cleared) for k in r.asset_check_keys] == ["scales_to_zero"]
    assert pool.check().passed and "at zero nodes" in pool.check().description


def test_min_count_drifted_above_zero_is_named_and_repaired_by_the_drift_sensor_not_the_guard(gp, pool):
    from sensors.drift import build_drift_sensor

    node = pool.idle_gpu_node()
    gp.admin.call("POST", "/sandbox/gke/drift/node-pool",
                  {"cluster": GKE_CLUSTER, "nodePool": "gpu-l4", "patch": {"autoscaling": {"minNodeCount": 1}}})
    pool.ticker.tick()
    pool.advance(21)
    stuck = pool.ticker.tick()
    [obs] = observations(stuck)
    assert obs.metadata["blocker_reasons"].value == MIN_SIZE
    assert "materialize gpu_pool" in obs.metadata["remedy"].value
    [report] = runs(stuck)  # the guard only reports: a checks-only run of scales_to_zero
    assert report.asset_selection is None and [k.name for k in report.asset_check_keys] == ["scales_to_zero"]
    [repair] = runs(Ticker(build_drift_sensor(), gp).tick())  # the drift: one run, the drift sensor's
    assert repair.asset_selection == [AssetKey("gpu_pool")]
    assert gp.materialize(select=["gpu_pool"], tags=dict(repair.tags)).success  # sets min back to 0
    pool.advance(11)
    assert node not in pool.gpu_nodes()
    pool.ticker.tick()
    assert pool.check().passed


def test_safe_to_evict_true_lets_the_pool_reach_zero(gp, pool):
    node = pool.idle_gpu_node()
    made = pool.block(node, "bare-pod", annotations={SAFE_TO_EVICT: "true"})
    assert made["pod"] in {p.name for p in pool.kube.pods() if p.node == node}, made
    pool.ticker.tick()
    pool.advance(21)
    assert node not in pool.gpu_nodes()
    result = pool.ticker.tick()
    assert not runs(result) and not result.asset_events, skip_text(result)


def test_a_healthy_pool_that_reached_zero_passes(gp, pool):
    node = pool.idle_gpu_node()
    idle = pool.ticker.tick()
    assert not idle.asset_events
    checks = gp.checks(gp.materialize(select=["gpu_pool"]))
    assert checks[("gpu_pool", "scales_to_zero")] is True  # idle, no blocker: the autoscaler will remove it
    pool.advance(11)
    assert pool.gpu_nodes() == []
    zero = pool.ticker.tick()
    assert not runs(zero) and not zero.asset_events
    assert "at zero nodes" in skip_text(zero)
    assert gp.checks(gp.materialize(select=["gpu_pool"]))[("gpu_pool", "scales_to_zero")] is True
    assert node not in pool.gpu_nodes()


def test_within_the_grace_period_a_blocked_node_is_named_but_passes(gp, pool):
    """The check fails on money burning (idle past the grace period), not on a node the autoscaler's window
    may still remove: within the grace the blocker is named and the check passes."""
    node = pool.idle_gpu_node()
    pool.block(node, "bare-pod")
    check = next(e for e in gp.materialize(select=["gpu_pool"]).get_asset_check_evaluations()
                 if e.check_name == "scales_to_zero")
    assert check.passed and NOT_REPLICATED in check.metadata["blocker_reasons"].value and node in check.description
