"""snapshot_class: on `profile: prod`, one default VolumeSnapshotClass for CNPG's volume-snapshot backups.

GKE installs the PD CSI driver and the snapshot CRDs but ships no default class, so gpuplat creates
`gke-pd-snapshotclass`. cost and dev profiles take no backups and need none.
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import EnvConfig
from .piece import Check, Outcome, Piece, Run
from .plan import Action

API = "snapshot.storage.k8s.io/v1"
KIND = "VolumeSnapshotClass"
DEFAULT_ANNOTATION = "snapshot.storage.kubernetes.io/is-default-class"
GKE_CLASS = ("gke-pd-snapshotclass", "pd.csi.storage.gke.io")
EXTERNAL_SNAPSHOTTER = ("install the CSI external-snapshotter CRDs and controller "
                        "(https://github.com/kubernetes-csi/external-snapshotter: client/config/crd and "
                        "deploy/kubernetes/snapshot-controller), then materialize snapshot_class")


@dataclass(frozen=True)
class SnapshotSpec:
    needed: bool
    name: str = ""
    driver: str = ""


@dataclass(frozen=True)
class SnapshotObserved:
    needed: bool
    crds: bool = False
    classes: tuple[tuple[str, str, str], ...] = ()  # (name, driver, deletionPolicy)
    defaults: tuple[str, ...] = ()

    def owned(self) -> dict:
        return {"needed": self.needed, "crds": self.crds, "classes": [list(c) for c in self.classes],
                "defaults": sorted(self.defaults)}


# ---- desired ------------------------------------------------------------------------------------
def desired_snapshot(env: EnvConfig) -> SnapshotSpec:
    if env.profile != "prod":
        return SnapshotSpec(False)
    name, driver = GKE_CLASS
    if not env.is_gke:
        driver = env.substrate.snapshot_driver
        name = f"{driver.replace('.', '-')}-snapshotclass" if driver else ""
    return SnapshotSpec(True, name, driver)


# ---- observe ------------------------------------------------------------------------------------
def observe_snapshot(run: Run, spec: SnapshotSpec) -> SnapshotObserved:
    if not spec.needed:
        return SnapshotObserved(False)
    kube = run.conn.kube
    if not kube.has_kind(API, KIND):
        return SnapshotObserved(True, crds=False)
    items = kube.list(API, KIND)
    classes = tuple((i["metadata"]["name"], i.get("driver", ""), i.get("deletionPolicy", "")) for i in items)
    defaults = tuple(i["metadata"]["name"] for i in items
                     if (i["metadata"].get("annotations") or {}).get(DEFAULT_ANNOTATION) == "true")
    return SnapshotObserved(True, True, classes, defaults)


# ---- plan ---------------------------------------------------------------------------------------
def plan_snapshot(spec: SnapshotSpec, observed: SnapshotObserved) -> list[Action]:
    if not spec.needed:
        return []
    if not observed.crds:
        return [Action("cannot-fix", "snapshot CRDs", observed="absent", remedy=EXTERNAL_SNAPSHOTTER)]
    if not spec.driver:
        return [Action("cannot-fix", "VolumeSnapshotClass", observed="no CSI driver configured",
                       remedy="set substrate.snapshot_driver to your CSI driver (e.g. csi.hetzner.cloud)")]
    actions = []
    mine = next((c for c in observed.classes if c[0] == spec.name), None)
    if mine is None:
        actions.append(Action("create", f"{KIND} {spec.name}", desired=f"driver {spec.driver}, deletionPolicy Delete, default"))
    elif mine[1:] != (spec.driver, "Delete"):
        actions.append(Action("cannot-fix", f"{KIND} {spec.name}", "driver/deletionPolicy",
                              desired=[spec.driver, "Delete"], observed=list(mine[1:]),
                              remedy="driver and deletionPolicy of a VolumeSnapshotClass are immutable: delete it and "
                                     "materialize snapshot_class"))
    elif spec.name not in observed.defaults:
        actions.append(Action("update", f"{KIND} {spec.name}", DEFAULT_ANNOTATION, desired="true", observed=None))
    for other in observed.defaults:
        if other != spec.name:
            actions.append(Action("update", f"{KIND} {other}", DEFAULT_ANNOTATION, desired=None, observed="true",
                                  args={"name": other}))
    return actions


# ---- apply --------------------------------------------------------------------------------------
def apply_snapshot(run: Run, spec: SnapshotSpec, observed: SnapshotObserved, actions: list[Action]) -> None:
    kube = run.conn.kube
    for a in actions:
        if a.kind == "create" or (a.kind == "update" and not a.args):
            kube.apply({"apiVersion": API, "kind": KIND,
                        "metadata": {"name": spec.name, "annotations": {DEFAULT_ANNOTATION: "true"}},
                        "driver": spec.driver, "deletionPolicy": "Delete"})
        elif a.kind == "update":
            kube.merge_patch(API, KIND, a.args["name"], {"metadata": {"annotations": {DEFAULT_ANNOTATION: None}}})


# ---- checks -------------------------------------------------------------------------------------
def check_default(spec: SnapshotSpec, observed: SnapshotObserved, env: EnvConfig) -> Outcome:
    if not spec.needed:
        return Outcome(True, f"profile {env.profile} takes no volume-snapshot backups: no snapshot class needed")
    if not observed.crds:
        return Outcome(False, "snapshot CRDs absent", {"remedy": EXTERNAL_SNAPSHOTTER})
    ok = list(observed.defaults) == [spec.name]
    return Outcome(ok, f"default VolumeSnapshotClass: {', '.join(observed.defaults) or 'none'}",
                   {"desired": spec.name, "remedy": "" if ok else "materialize snapshot_class"})


class SnapshotClass(Piece[SnapshotSpec, SnapshotObserved]):
    name = "snapshot_class"
    description = "On profile prod, one default VolumeSnapshotClass for the cluster's CSI driver (gke-pd-snapshotclass on GKE)."
    group = "cluster"
    kinds = frozenset({"kubernetes", "storage"})
    deps = ("storage_class",)
    owned_fields = ("the gpuplat VolumeSnapshotClass", f"{DEFAULT_ANNOTATION} on every VolumeSnapshotClass")
    checks = (Check("default_snapshot_class", "On prod, exactly one default VolumeSnapshotClass exists.", check_default),)

    def desired(self, env: EnvConfig) -> SnapshotSpec:
        return desired_snapshot(env)

    def observe(self, run: Run, spec: SnapshotSpec) -> SnapshotObserved:
        return observe_snapshot(run, spec)

    def plan(self, spec: SnapshotSpec, observed: SnapshotObserved) -> list[Action]:
        return plan_snapshot(spec, observed)

    def apply(self, run: Run, spec: SnapshotSpec, observed: SnapshotObserved, actions: list[Action]) -> None:
        apply_snapshot(run, spec, observed, actions)


PIECE = SnapshotClass()
