"""The run launcher of a deployment with trust zones: each run pod holds its own zone's identity.

A run of a production environment and a run of a throwaway one must never hold the same Google
credentials. Each zone has its own Kubernetes service account, bound by Workload Identity to its own
Google service account that has roles only on that zone's projects. This launcher is Dagster's
K8sRunLauncher with one change: the service account of a run's pod is the zone's, chosen from the
run's partition (the environment) by the first zone whose patterns match its name, whatever else the
run asked for. The pod is told its zone (GPUPLAT_TRUST_ZONE), and the run refuses an environment whose
config places it in another zone (substrate/config.py `zone_refusal`), so a wrong pattern fails before
anything is read or called. A run matching no zone gets the launcher's own service account, which
must hold no role that changes anything (deploy/values.yaml: the code server's reader): it fails closed.

In deploy/values.yaml (the chart's `CustomRunLauncher`) and deploy/dagster.yaml:

    trust_zones:
      - {name: prod, service_account_name: gpuplat-prod, environments: ["prod-*"]}
      - {name: dev, service_account_name: gpuplat-dev, environments: ["*"]}
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase

from dagster import Array, Field, Shape, String
from dagster_k8s import K8sRunLauncher
from dagster_k8s.container_context import K8sContainerContext

from dagster._core.storage.tags import PARTITION_NAME_TAG

from substrate.config import TRUST_ZONE_VAR


@dataclass(frozen=True)
class Zone:
    name: str
    service_account_name: str
    environments: tuple[str, ...]

    def holds(self, env: str) -> bool:
        return any(fnmatchcase(env, pattern) for pattern in self.environments)


class ZonedK8sRunLauncher(K8sRunLauncher):
    def __init__(self, trust_zones=None, **kwargs):
        self.zones = tuple(Zone(z["name"], z["service_account_name"], tuple(z["environments"]))
                           for z in trust_zones or ())
        super().__init__(**kwargs)

    @classmethod
    def config_type(cls):
        return {**super().config_type(), "trust_zones": Field(
            Array(Shape({"name": String, "service_account_name": String, "environments": Array(String)})),
            is_required=False, default_value=[],
            description="Per zone: its name, the Kubernetes service account of its run pods, and the "
                        "environment name patterns (fnmatch) it holds; the first match wins.")}

    def zone_of(self, env: str) -> Zone | None:
        return next((z for z in self.zones if env and z.holds(env)), None)

    def get_container_context_for_run(self, dagster_run) -> K8sContainerContext:
        context = super().get_container_context_for_run(dagster_run)
        zone = self.zone_of(dagster_run.tags.get(PARTITION_NAME_TAG, ""))
        # Set last, so neither the code location nor a run's dagster-k8s/config tag can pick another
        # zone's account.
        account = zone.service_account_name if zone else self.service_account_name
        zoned = K8sContainerContext(service_account_name=account,
                                    env_vars=[f"{TRUST_ZONE_VAR}={zone.name}"] if zone else [])
        return context.merge(zoned)
