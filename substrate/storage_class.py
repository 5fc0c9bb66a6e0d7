"""storage_class: exactly one default StorageClass, the configured one (every PVC inherits it)."""

from __future__ import annotations

from dataclasses import dataclass

from .config import EnvConfig
from .piece import Check, Outcome, Piece, Run
from .plan import Action

DEFAULT_ANNOTATION = "storageclass.kubernetes.io/is-default-class"
GKE_DEFAULT = "standard-rwo"


@dataclass(frozen=True)
class StorageSpec:
    name: str  # "" off GKE with nothing configured: keep whichever single default exists


@dataclass(frozen=True)
class StorageObserved:
    classes: tuple[str, ...]
    defaults: tuple[str, ...]

    def owned(self) -> dict:
        return {"classes": sorted(self.classes), "defaults": sorted(self.defaults)}


# ---- desired ------------------------------------------------------------------------------------
def desired_storage(env: EnvConfig) -> StorageSpec:
    return StorageSpec(env.substrate.storage_class or (GKE_DEFAULT if env.is_gke else ""))


# ---- observe ------------------------------------------------------------------------------------
def observe_storage(run: Run, spec: StorageSpec) -> StorageObserved:
    items = run.conn.kube.list("storage.k8s.io/v1", "StorageClass")
    names = tuple(i["metadata"]["name"] for i in items)
    defaults = tuple(i["metadata"]["name"] for i in items
                     if (i["metadata"].get("annotations") or {}).get(DEFAULT_ANNOTATION) == "true")
    return StorageObserved(names, defaults)


# ---- plan ---------------------------------------------------------------------------------------
def plan_storage(spec: StorageSpec, observed: StorageObserved) -> list[Action]:
    want = spec.name
    if not want:
        if len(observed.defaults) == 1:
            return []
        if not observed.defaults:
            return [Action("cannot-fix", "default StorageClass", observed="none",
                           remedy=remedy_none(observed) + "; or name one in substrate.storage_class")]
        return [Action("cannot-fix", "default StorageClass", observed=list(observed.defaults),
                       remedy="several classes are marked default: name the one to keep in substrate.storage_class")]
    if want not in observed.classes:
        return [Action("cannot-fix", f"StorageClass {want}", observed="absent", remedy=remedy_none(observed))]
    actions = []
    if want not in observed.defaults:
        actions.append(Action("update", f"StorageClass {want}", DEFAULT_ANNOTATION, desired="true", observed=None,
                              args={"name": want, "value": "true"}))
    for other in observed.defaults:
        if other != want:
            actions.append(Action("update", f"StorageClass {other}", DEFAULT_ANNOTATION, desired=None, observed="true",
                                  args={"name": other, "value": None}))
    return actions


def remedy_none(observed: StorageObserved) -> str:
    existing = ", ".join(observed.classes) or "none"
    return (f"install a CSI driver and its StorageClass (Hetzner: hcloud-csi's hcloud-volumes; bare metal: "
            f"local-path-provisioner or Longhorn); existing classes: {existing}")


# ---- apply --------------------------------------------------------------------------------------
def apply_storage(run: Run, spec: StorageSpec, observed: StorageObserved, actions: list[Action]) -> None:
    # The new default is marked first, so there is never a moment with no default at all.
    for a in sorted(actions, key=lambda a: a.args.get("value") is None):
        if a.kind == "update":
            run.conn.kube.merge_patch("storage.k8s.io/v1", "StorageClass", a.args["name"],
                                      {"metadata": {"annotations": {DEFAULT_ANNOTATION: a.args["value"]}}})


# ---- checks -------------------------------------------------------------------------------------
def check_one_default(spec: StorageSpec, observed: StorageObserved, env: EnvConfig) -> Outcome:
    ok = len(observed.defaults) == 1 and (not spec.name or observed.defaults[0] == spec.name)
    return Outcome(ok, f"default StorageClass: {', '.join(observed.defaults) or 'none'}",
                   {"desired": spec.name or "(any single one)", "defaults": ", ".join(observed.defaults),
                    "classes": ", ".join(observed.classes),
                    "remedy": "" if ok else "materialize storage_class" if spec.name in observed.classes
                    else remedy_none(observed)})


class StorageClass(Piece[StorageSpec, StorageObserved]):
    name = "storage_class"
    description = "Exactly one default StorageClass, the configured one."
    group = "cluster"
    kinds = frozenset({"kubernetes", "storage"})
    deps = ("cluster",)
    owned_fields = (f"{DEFAULT_ANNOTATION} on every StorageClass",)
    checks = (Check("one_default_storage_class", "Exactly one StorageClass is marked default.", check_one_default),)

    def desired(self, env: EnvConfig) -> StorageSpec:
        return desired_storage(env)

    def observe(self, run: Run, spec: StorageSpec) -> StorageObserved:
        return observe_storage(run, spec)

    def plan(self, spec: StorageSpec, observed: StorageObserved) -> list[Action]:
        return plan_storage(spec, observed)

    def apply(self, run: Run, spec: StorageSpec, observed: StorageObserved, actions: list[Action]) -> None:
        apply_storage(run, spec, observed, actions)


PIECE = StorageClass()
