"""Google Cloud, in gpuplat's words: GKE, Service Usage, Secret Manager, Compute quotas, Billing Catalog.

With `iam.py` (identities, policies, Artifact Registry), the only module that imports `google.cloud`. Clients are built lazily on first use: the real
endpoints with Application Default Credentials, or the sandbox's endpoints with anonymous
credentials. Transient errors (5xx, 429, GKE's "operation in progress") are retried by
`google.api_core.retry`; permanent ones surface as the library's exceptions for the caller to name.
"""

from __future__ import annotations

import os
import tempfile
import time
from functools import cached_property
from pathlib import Path
from typing import Callable

from .models import (ClusterSpec, ClusterState, Leftover, NodePoolSpec, NodePoolState, OperationState, Quota,
                     SkuPrice, Taint)

ERR_OPERATION = "GKE operation failed"
ERR_OPERATION_TIMEOUT = "GKE operation did not finish in time"
ERR_SERVICE_USAGE_OFF = "the Service Usage API is disabled in project"

_EFFECT_TO_K8S = {"NO_SCHEDULE": "NoSchedule", "PREFER_NO_SCHEDULE": "PreferNoSchedule", "NO_EXECUTE": "NoExecute"}
_EFFECT_TO_GKE = {v: k for k, v in _EFFECT_TO_K8S.items()}


class _Exceptions:
    """`google.api_core.exceptions`, imported on first use: it pulls in gRPC, which every Dagster
    process that loads the code location would otherwise pay for (benchmarks/import_time.py)."""

    def __getattr__(self, name: str):
        from google.api_core import exceptions
        return getattr(exceptions, name)


gexc = _Exceptions()


def _busy(exc: Exception) -> bool:
    # GKE refuses a second operation on a cluster with FAILED_PRECONDITION (400 over REST).
    return isinstance(exc, gexc.BadRequest) and "operation" in str(exc).lower() and (
        "incompatible" in str(exc).lower() or "please wait" in str(exc).lower() or "currently" in str(exc).lower())


# A service enabled a moment ago may answer SERVICE_DISABLED for a few minutes ("wait a few minutes for
# the action to propagate to our systems and retry", the error's own words), so it is retried for that
# long. Dagster runs each step in its own process: when gpuplat enabled what is noted in a file, one
# folder per Google target (the real APIs, or one sandbox's endpoints).
PROPAGATION_S = 300.0


def is_transient(exc: Exception) -> bool:
    return isinstance(exc, (gexc.ServiceUnavailable, gexc.TooManyRequests, gexc.InternalServerError,
                            gexc.GatewayTimeout, gexc.BadGateway)) or _busy(exc)


def default_retry(deadline: float = 180.0, predicate: Callable[[Exception], bool] = is_transient):
    from google.api_core.retry import Retry
    return Retry(predicate=predicate, initial=0.2, maximum=5.0, multiplier=2.0, timeout=deadline)


class EnabledMarks:
    """When gpuplat enabled which service, per project, for one Google target."""

    def __init__(self, endpoints: dict[str, str] | None):
        import hashlib
        target = hashlib.sha1(repr(sorted(endpoints.items())).encode()).hexdigest()[:12] if endpoints else "google"
        self.root = Path(tempfile.gettempdir()) / f"gpuplat-enabled-{os.getuid()}" / target

    def mark(self, project: str, services: list[str]) -> None:
        for service in services:
            marker = self.root / project / service
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.touch()

    def propagating(self, exc: Exception) -> bool:
        """A SERVICE_DISABLED for a service gpuplat enabled less than PROPAGATION_S ago."""
        if not isinstance(exc, gexc.Forbidden) or getattr(exc, "reason", None) != "SERVICE_DISABLED":
            return False
        meta = exc.metadata or {}
        marker = self.root / (meta.get("consumer", "").removeprefix("projects/") or "-") / (meta.get("service") or "-")
        try:
            return time.time() - marker.stat().st_mtime < PROPAGATION_S
        except OSError:
            return False


class OperationFailed(Exception):
    pass


class Google:
    """One GCP project's APIs. `endpoints` set means the sandbox (anonymous, REST, loopback)."""

    def __init__(self, project: str, endpoints: dict[str, str] | None = None,
                 sleeper: Callable[[float], None] = time.sleep, timer: Callable[[], float] = time.monotonic,
                 retry_deadline: float = 180.0):
        self.project = project
        self.endpoints = endpoints
        self.sleeper = sleeper
        self.timer = timer
        self.enabled_marks = EnabledMarks(endpoints)
        self.retry = default_retry(retry_deadline, lambda exc: is_transient(exc) or self.enabled_marks.propagating(exc))

    def _kwargs(self, api: str) -> dict:
        if self.endpoints is None:
            return {"transport": "rest"}
        from google.api_core.client_options import ClientOptions
        from google.auth.credentials import AnonymousCredentials
        return {"transport": "rest", "credentials": AnonymousCredentials(),
                "client_options": ClientOptions(api_endpoint=self.endpoints[api])}

    # ---- lazy clients ---------------------------------------------------------------------------
    @cached_property
    def iam(self):
        """Service accounts, IAM policies and Artifact Registry (resources/iam.py)."""
        from .iam import Iam
        return Iam(self)

    @cached_property
    def _gke(self):
        from google.cloud import container_v1
        return container_v1.ClusterManagerClient(**self._kwargs("container"))

    @cached_property
    def _usage(self):
        from google.cloud import service_usage_v1
        return service_usage_v1.ServiceUsageClient(**self._kwargs("serviceusage"))

    @cached_property
    def _secrets(self):
        from google.cloud import secretmanager_v1
        return secretmanager_v1.SecretManagerServiceClient(**self._kwargs("secretmanager"))

    @cached_property
    def _regions(self):
        from google.cloud import compute_v1
        return compute_v1.RegionsClient(**self._kwargs("compute"))

    @cached_property
    def _projects(self):
        from google.cloud import compute_v1
        return compute_v1.ProjectsClient(**self._kwargs("compute"))

    @cached_property
    def _catalog(self):
        from google.cloud import billing_v1
        return billing_v1.CloudCatalogClient(**self._kwargs("billing"))

    # ---- GKE ------------------------------------------------------------------------------------
    def _loc(self, location: str) -> str:
        return f"projects/{self.project}/locations/{location}"

    def cluster_path(self, location: str, name: str) -> str:
        return f"{self._loc(location)}/clusters/{name}"

    def get_cluster(self, location: str, name: str) -> ClusterState | None:
        try:
            c = self._gke.get_cluster(name=self.cluster_path(location, name), retry=self.retry)
        except gexc.NotFound:
            return None
        return _cluster_state(c)

    def create_cluster(self, spec: ClusterSpec) -> OperationState:
        from google.cloud import container_v1 as c
        cluster = c.Cluster(
            name=spec.name,
            release_channel=c.ReleaseChannel(channel=c.ReleaseChannel.Channel[spec.release_channel]),
            workload_identity_config=c.WorkloadIdentityConfig(workload_pool=spec.workload_pool),
            ip_allocation_policy=c.IPAllocationPolicy(use_ip_aliases=spec.vpc_native),
            network_config=c.NetworkConfig(datapath_provider=c.DatapathProvider[spec.datapath_provider]),
            # Only our own pools: no default pool to delete later (initial_node_count stays unset).
            node_pools=[_pool_message(spec.cpu_pool)],
        )
        try:
            op = self._gke.create_cluster(parent=self._loc(spec.location), cluster=cluster, retry=self.retry)
        except gexc.Conflict:
            return OperationState(name="", status="ALREADY_EXISTS")
        return _op_state(op, spec.location, self.project)

    def create_node_pool(self, location: str, cluster: str, spec: NodePoolSpec) -> OperationState:
        try:
            op = self._gke.create_node_pool(parent=self.cluster_path(location, cluster),
                                            node_pool=_pool_message(spec), retry=self.retry)
        except gexc.Conflict:
            return OperationState(name="", status="ALREADY_EXISTS")
        return _op_state(op, location, self.project)

    def set_node_pool_autoscaling(self, location: str, cluster: str, pool: str, min_nodes: int,
                                  max_nodes: int) -> OperationState:
        from google.cloud import container_v1 as c
        req = c.SetNodePoolAutoscalingRequest(
            name=f"{self.cluster_path(location, cluster)}/nodePools/{pool}",
            autoscaling=c.NodePoolAutoscaling(enabled=True, min_node_count=min_nodes, max_node_count=max_nodes))
        return _op_state(self._gke.set_node_pool_autoscaling(request=req, retry=self.retry), location, self.project)

    def update_node_pool(self, location: str, cluster: str, current: NodePoolState,
                         taints: tuple[Taint, ...] | None = None, labels: dict | None = None) -> OperationState:
        """Update taints and/or labels; both replace the whole list as GKE's API does."""
        from google.cloud import container_v1 as c
        req = c.UpdateNodePoolRequest(
            name=f"{self.cluster_path(location, cluster)}/nodePools/{current.name}",
            node_version=current.version, image_type=current.image_type)
        if taints is not None:
            req.taints = c.NodeTaints(taints=[c.NodeTaint(key=t.key, value=t.value,
                                                          effect=c.NodeTaint.Effect[_EFFECT_TO_GKE[t.effect]])
                                              for t in taints])
        if labels is not None:
            req.labels = c.NodeLabels(labels=labels)
        return _op_state(self._gke.update_node_pool(request=req, retry=self.retry), location, self.project)

    def update_cluster(self, location: str, name: str, release_channel: str | None = None) -> OperationState:
        from google.cloud import container_v1 as c
        update = c.ClusterUpdate()
        if release_channel:
            update.desired_release_channel = c.ReleaseChannel(channel=c.ReleaseChannel.Channel[release_channel])
        op = self._gke.update_cluster(name=self.cluster_path(location, name), update=update, retry=self.retry)
        return _op_state(op, location, self.project)

    # Deletes exist only for a pause the user declared and approved (lifecycle: paused).
    def delete_node_pool(self, location: str, cluster: str, pool: str) -> OperationState:
        try:
            op = self._gke.delete_node_pool(name=f"{self.cluster_path(location, cluster)}/nodePools/{pool}",
                                            retry=self.retry)
        except gexc.NotFound:
            return OperationState(name="", status="NOT_FOUND")
        return _op_state(op, location, self.project)

    def delete_cluster(self, location: str, name: str) -> OperationState:
        try:
            op = self._gke.delete_cluster(name=self.cluster_path(location, name), retry=self.retry)
        except gexc.NotFound:
            return OperationState(name="", status="NOT_FOUND")
        return _op_state(op, location, self.project)

    def running_operations(self, location: str) -> list[OperationState]:
        resp = self._gke.list_operations(parent=self._loc(location), retry=self.retry)
        return [s for s in (_op_state(op, location, self.project) for op in resp.operations) if s.status != "DONE"]

    def get_operation(self, name: str) -> OperationState:
        op = self._gke.get_operation(name=name, retry=self.retry)
        return OperationState(name=name, status=op.status.name, error=_op_error(op), operation_type=op.operation_type.name)

    def wait_operation(self, op: OperationState, timeout: float,
                       progress: Callable[[float, str], None] | None = None, interval: float = 0.5,
                       max_interval: float = 10.0, progress_every: float = 15.0) -> OperationState:
        """Poll until DONE; report progress every `progress_every` seconds, never minutes of silence."""
        if not op.name:
            return op
        start = self.timer()
        last_report = start
        state = op
        while True:
            state = self.get_operation(op.name)
            now = self.timer()
            if state.status == "DONE":
                if state.error:
                    raise OperationFailed(f"{ERR_OPERATION}: {op.name}: {state.error}")
                return state
            if now - start > timeout:
                raise OperationFailed(f"{ERR_OPERATION_TIMEOUT}: {op.name} still {state.status} after "
                                      f"{now - start:.0f}s (limit {timeout:.0f}s)")
            if progress and now - last_report >= progress_every:
                progress(now - start, state.status)
                last_report = now
            self.sleeper(interval)
            interval = min(interval * 2, max_interval)

    # ---- Service Usage ---------------------------------------------------------------------------
    def enabled_services(self) -> set[str]:
        try:
            pager = self._usage.list_services(request={"parent": f"projects/{self.project}",
                                                       "filter": "state:ENABLED", "page_size": 200},
                                              retry=self.retry)
            return {s.config.name or s.name.rsplit("/", 1)[-1] for s in pager}
        except gexc.Forbidden as exc:  # REST maps 403 to Forbidden (PermissionDenied is its gRPC subclass)
            if "SERVICE_DISABLED" in str(exc) or "has not been used" in str(exc):
                raise ServiceUsageDisabled(self.project) from None
            raise

    def enable_services(self, names: list[str], timeout: float = 300.0) -> None:
        for i in range(0, len(names), 20):  # batch_enable_services takes at most 20
            op = self._usage.batch_enable_services(
                request={"parent": f"projects/{self.project}", "service_ids": names[i:i + 20]}, retry=self.retry)
            op.result(timeout=timeout)
            self.enabled_marks.mark(self.project, names[i:i + 20])

    # ---- Secret Manager ----------------------------------------------------------------------------
    def secret_ids(self) -> set[str]:
        pager = self._secrets.list_secrets(request={"parent": f"projects/{self.project}", "page_size": 250},
                                           retry=self.retry)
        return {s.name.rsplit("/", 1)[-1] for s in pager}

    def has_enabled_version(self, secret_id: str) -> bool:
        """Whether the secret has a version that can be read (a secret without one reads as absent to ESO)."""
        try:
            pager = self._secrets.list_secret_versions(
                request={"parent": f"projects/{self.project}/secrets/{secret_id}", "filter": "state:ENABLED",
                         "page_size": 1}, retry=self.retry)
            return next(iter(pager), None) is not None
        except gexc.NotFound:
            return False

    def create_secret(self, secret_id: str) -> bool:
        """Create the secret (no version yet); an existing secret is left untouched (False)."""
        from google.cloud import secretmanager_v1 as sm
        try:
            self._secrets.create_secret(
                request={"parent": f"projects/{self.project}", "secret_id": secret_id,
                         "secret": sm.Secret(replication=sm.Replication(automatic=sm.Replication.Automatic()))},
                retry=self.retry)
        except gexc.Conflict:
            return False
        return True

    def add_secret_version(self, secret_id: str, value: bytes) -> None:
        self._secrets.add_secret_version(
            request={"parent": f"projects/{self.project}/secrets/{secret_id}", "payload": {"data": value}},
            retry=self.retry)

    def access_secret(self, secret_id: str) -> bytes | None:
        """The latest enabled version's value, or None: for comparisons made in this process only,
        never to be logged or returned beyond the caller."""
        try:
            resp = self._secrets.access_secret_version(
                name=f"projects/{self.project}/secrets/{secret_id}/versions/latest", retry=self.retry)
        except gexc.NotFound:
            return None
        return resp.payload.data

    # ---- Compute quotas -------------------------------------------------------------------------------
    def region_quotas(self, region: str) -> dict[str, Quota]:
        r = self._regions.get(project=self.project, region=region, retry=self.retry)
        return {q.metric: Quota(q.metric, region, q.limit, q.usage) for q in r.quotas}

    def project_quotas(self) -> dict[str, Quota]:
        p = self._projects.get(project=self.project, retry=self.retry)
        return {q.metric: Quota(q.metric, "global", q.limit, q.usage) for q in p.quotas}

    # ---- Compute: what outlives a cluster ------------------------------------------------------------
    def leftovers(self) -> list[Leftover]:
        """The project's forwarding rules, reserved addresses and persistent disks, every scope (the
        aggregated lists `gcloud compute ... list` reads)."""
        from google.cloud import compute_v1
        out = []
        for kind, client, field in (("forwarding rule", compute_v1.ForwardingRulesClient, "forwarding_rules"),
                                    ("address", compute_v1.AddressesClient, "addresses"),
                                    ("disk", compute_v1.DisksClient, "disks")):
            api = client(**self._kwargs("compute"))
            for scope, listed in api.aggregated_list(project=self.project, retry=self.retry):
                for item in getattr(listed, field):
                    out.append(Leftover(kind, item.name, scope, int(getattr(item, "size_gb", 0) or 0),
                                        getattr(item, "type_", "").rsplit("/", 1)[-1]))
        return out

    def delete_disk(self, zone: str, name: str) -> None:
        from google.cloud import compute_v1
        try:
            compute_v1.DisksClient(**self._kwargs("compute")).delete(
                project=self.project, zone=zone, disk=name, retry=self.retry).result(timeout=300)
        except gexc.NotFound:
            pass

    # ---- Billing Catalog ----------------------------------------------------------------------------------
    def sku_prices(self, region: str) -> list[SkuPrice]:
        """On-demand SKUs of Compute Engine and Kubernetes Engine offered in `region` (or globally)."""
        # The catalog belongs to no project: the caller's quota project (this one) must have the Cloud
        # Billing API enabled, and says so in x-goog-user-project.
        quota_project = [("x-goog-user-project", self.project)]
        services = self._catalog.list_services(retry=self.retry, metadata=quota_project)
        out = []
        for service in (s for s in services if s.display_name in ("Compute Engine", "Kubernetes Engine")):
            for sku in self._catalog.list_skus(parent=service.name, retry=self.retry, metadata=quota_project):
                if not ({region, "global"} & set(sku.service_regions)) or sku.category.usage_type != "OnDemand" \
                        or not sku.pricing_info:
                    continue
                expr = sku.pricing_info[0].pricing_expression
                if not expr.tiered_rates:
                    continue
                price = expr.tiered_rates[-1].unit_price
                out.append(SkuPrice(sku.description, price.units + price.nanos / 1e9, price.currency_code,
                                    expr.usage_unit))
        return out


class ServiceUsageDisabled(Exception):
    def __init__(self, project: str):
        super().__init__(f"{ERR_SERVICE_USAGE_OFF} {project}")
        self.project = project


# ---- conversions (SDK -> gpuplat) -------------------------------------------------------------------
def _pool_message(spec: NodePoolSpec):
    from google.cloud import container_v1 as c
    # As the fork's Terraform: the node service account, its scopes, no legacy metadata endpoints,
    # and the GKE metadata server (Workload Identity) on every node.
    config = c.NodeConfig(machine_type=spec.machine_type, disk_size_gb=spec.disk_size_gb,
                          labels=dict(spec.labels), service_account=spec.service_account or "",
                          oauth_scopes=list(spec.oauth_scopes), metadata={"disable-legacy-endpoints": "true"},
                          workload_metadata_config=c.WorkloadMetadataConfig(mode=c.WorkloadMetadataConfig.Mode.GKE_METADATA),
                          taints=[c.NodeTaint(key=t.key, value=t.value, effect=c.NodeTaint.Effect[_EFFECT_TO_GKE[t.effect]])
                                  for t in spec.taints])
    if spec.accelerator_type:
        config.accelerators = [c.AcceleratorConfig(
            accelerator_count=spec.accelerator_count, accelerator_type=spec.accelerator_type,
            gpu_driver_installation_config=c.GPUDriverInstallationConfig(
                gpu_driver_version=c.GPUDriverInstallationConfig.GPUDriverVersion[spec.gpu_driver_version or "DEFAULT"]))]
    return c.NodePool(
        name=spec.name, config=config, initial_node_count=spec.min_nodes,
        autoscaling=c.NodePoolAutoscaling(enabled=True, min_node_count=spec.min_nodes, max_node_count=spec.max_nodes),
        management=c.NodeManagement(auto_upgrade=True, auto_repair=True))


def _pool_state(p) -> NodePoolState:
    acc = p.config.accelerators[0] if p.config.accelerators else None
    driver = ""
    if acc is not None and acc.gpu_driver_installation_config:
        driver = acc.gpu_driver_installation_config.gpu_driver_version.name
        driver = "" if driver.endswith("UNSPECIFIED") else driver
    return NodePoolState(
        name=p.name, status=p.status.name, machine_type=p.config.machine_type, disk_size_gb=p.config.disk_size_gb,
        accelerator_type=acc.accelerator_type if acc else "", accelerator_count=acc.accelerator_count if acc else 0,
        gpu_driver_version=driver, autoscaling_enabled=p.autoscaling.enabled,
        min_nodes=p.autoscaling.min_node_count, max_nodes=p.autoscaling.max_node_count,
        taints=tuple(Taint(t.key, t.value, _EFFECT_TO_K8S.get(t.effect.name, t.effect.name)) for t in p.config.taints),
        labels=dict(p.config.labels), service_account=p.config.service_account, version=p.version,
        image_type=p.config.image_type, locations=tuple(p.locations), oauth_scopes=tuple(p.config.oauth_scopes),
        status_message=p.status_message, conditions=_conditions(p.conditions))


def _conditions(conditions) -> tuple[tuple[str, str], ...]:
    return tuple((c.code.name if c.code else c.canonical_code.name, c.message) for c in conditions)


def _cluster_state(c) -> ClusterState:
    return ClusterState(
        name=c.name, location=c.location, status=c.status.name,
        release_channel=c.release_channel.channel.name, workload_pool=c.workload_identity_config.workload_pool,
        vpc_native=bool(c.ip_allocation_policy.use_ip_aliases), datapath_provider=c.network_config.datapath_provider.name,
        endpoint=c.endpoint, master_version=c.current_master_version,
        node_pools=tuple(_pool_state(p) for p in c.node_pools),
        ca_certificate=c.master_auth.cluster_ca_certificate, status_message=c.status_message,
        conditions=_conditions(c.conditions))


def _op_error(op) -> str:
    if op.error and (op.error.code or op.error.message):
        return op.error.message or f"code {op.error.code}"
    return op.status_message or ""


def _op_state(op, location: str, project: str) -> OperationState:
    name = op.name if op.name.startswith("projects/") else f"projects/{project}/locations/{location}/operations/{op.name}"
    return OperationState(name=name, status=op.status.name, error=_op_error(op) if op.status.name == "DONE" else "",
                          operation_type=op.operation_type.name)
