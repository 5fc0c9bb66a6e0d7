"""Google Cloud, in gpuplat's words: GKE, Service Usage, Secret Manager, Compute quotas, Billing Catalog.

With `iam.py` (identities, policies, Artifact Registry), the only module that imports `google.cloud`.
Clients are built lazily on first use: the real endpoints with Application Default Credentials, or
the sandbox's endpoints with anonymous credentials. Transient errors (5xx, 429, a lost answer, GKE's
"operation in progress", a service account not yet propagated) are retried by `google.api_core.retry`
for a bounded time; every other error leaves a method as one of gpuplat's typed errors
(`resources/errors.py`, classified in `resources/google_errors.py`).
"""

from __future__ import annotations

from functools import cached_property
from typing import Callable

from .errors import OperationFailed, OperationQuota, OperationTimeout, Stockout
from .gcp import GcpProject
from .google_errors import gexc, is_server_side_transient, translated
from .models import (ClusterSpec, ClusterState, Leftover, NodePoolSpec, NodePoolState, OperationState, Quota,
                     SkuPrice, Taint)

ERR_OPERATION = "GKE operation failed"
ERR_OPERATION_TIMEOUT = "GKE operation did not finish in time"
# GKE's own bound on a cluster operation: a change waits that long for a busy cluster (an upgrade, a repair,
# a create still settling), no longer (Terraform's GKE resources allow 40 to 90 minutes).
GKE_BUSY_WAIT_S = 1800.0

_EFFECT_TO_K8S = {"NO_SCHEDULE": "NoSchedule", "PREFER_NO_SCHEDULE": "PreferNoSchedule", "NO_EXECUTE": "NoExecute"}
_EFFECT_TO_GKE = {v: k for k, v in _EFFECT_TO_K8S.items()}


class Google(GcpProject):
    """One GCP project's APIs. `endpoints` set means the sandbox (anonymous, REST, loopback)."""

    # ---- lazy clients ---------------------------------------------------------------------------
    @property
    def gke_retry(self):
        """Reads of GKE: its transient answers, for the usual bounded time."""
        return self.retry_for("container", on_error=self.waiting("GKE"))

    @property
    def gke_change_retry(self):
        """Changes to GKE: also FAILED_PRECONDITION while another operation runs on the cluster, waited out
        up to GKE's own bound on an operation, saying how long it waits."""
        return self.retry_for("container", deadline=GKE_BUSY_WAIT_S,
                              on_error=self.waiting("GKE (the cluster is busy with another operation)"))

    def _in_flight(self, location: str, target: str, op_type: str) -> OperationState | None:
        """The operation of `op_type` still running on `target` (`clusters/<c>` or `.../nodePools/<p>`)."""
        resp = self._gke.list_operations(parent=self._loc(location), retry=self.gke_retry)
        for op in resp.operations:
            if op.status.name != "DONE" and op.operation_type.name == op_type and op.target_link.endswith(f"/{target}"):
                return _op_state(op, location, self.project)
        return None

    @cached_property
    def _gke(self):
        from google.cloud import container_v1
        return self.shared_client("container", lambda: container_v1.ClusterManagerClient(**self._kwargs("container")))

    @cached_property
    def _usage(self):
        from google.cloud import service_usage_v1
        return self.shared_client("serviceusage", lambda: service_usage_v1.ServiceUsageClient(**self._kwargs("serviceusage")))

    @cached_property
    def _secrets(self):
        from google.cloud import secretmanager_v1
        return self.shared_client("secretmanager", lambda: secretmanager_v1.SecretManagerServiceClient(**self._kwargs("secretmanager")))

    @cached_property
    def _regions(self):
        from google.cloud import compute_v1
        return self.shared_client("compute", lambda: compute_v1.RegionsClient(**self._kwargs("compute")), "regions")

    @cached_property
    def _projects(self):
        from google.cloud import compute_v1
        return self.shared_client("compute", lambda: compute_v1.ProjectsClient(**self._kwargs("compute")), "projects")

    @cached_property
    def _catalog(self):
        from google.cloud import billing_v1
        return self.shared_client("billing", lambda: billing_v1.CloudCatalogClient(**self._kwargs("billing")))

    # ---- GKE ------------------------------------------------------------------------------------
    def _loc(self, location: str) -> str:
        return f"projects/{self.project}/locations/{location}"

    def cluster_path(self, location: str, name: str) -> str:
        return f"{self._loc(location)}/clusters/{name}"

    @translated("container")
    def get_cluster(self, location: str, name: str) -> ClusterState | None:
        try:
            c = self._gke.get_cluster(name=self.cluster_path(location, name), retry=self.gke_retry,
                                      metadata=_CLUSTER_MASK)
        except gexc.NotFound:
            return None
        return _cluster_state(c)

    @translated("container")
    def clusters(self, location: str) -> dict[str, ClusterState]:
        """The project's clusters in `location` by name, one ListClusters call: what a tick over many
        environments of one project reads instead of a GetCluster each (resources/memo.py). A zone that did
        not answer (the response's missingZones) leaves its clusters out; a cluster not listed is read alone."""
        resp = self._gke.list_clusters(parent=self._loc(location), retry=self.gke_retry, metadata=_CLUSTERS_MASK)
        return {c.name: _cluster_state(c) for c in resp.clusters}

    @translated("container")
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
            op = self._gke.create_cluster(parent=self._loc(spec.location), cluster=cluster, retry=self.gke_change_retry)
        except gexc.Conflict:
            # Another run created it, or this one did and its answer was lost: wait for that creation.
            return (self._in_flight(spec.location, f"clusters/{spec.name}", "CREATE_CLUSTER")
                    or OperationState(name="", status="ALREADY_EXISTS"))
        return _op_state(op, spec.location, self.project)

    @translated("container")
    def create_node_pool(self, location: str, cluster: str, spec: NodePoolSpec) -> OperationState:
        try:
            op = self._gke.create_node_pool(parent=self.cluster_path(location, cluster),
                                            node_pool=_pool_message(spec), retry=self.gke_change_retry)
        except gexc.Conflict:
            # Another run created it, or this one did and its answer was lost: wait for that creation.
            return (self._in_flight(location, f"clusters/{cluster}/nodePools/{spec.name}", "CREATE_NODE_POOL")
                    or OperationState(name="", status="ALREADY_EXISTS"))
        return _op_state(op, location, self.project)

    @translated("container")
    def set_node_pool_autoscaling(self, location: str, cluster: str, pool: str, min_nodes: int,
                                  max_nodes: int) -> OperationState:
        from google.cloud import container_v1 as c
        req = c.SetNodePoolAutoscalingRequest(
            name=f"{self.cluster_path(location, cluster)}/nodePools/{pool}",
            autoscaling=c.NodePoolAutoscaling(enabled=True, min_node_count=min_nodes, max_node_count=max_nodes))
        return _op_state(self._gke.set_node_pool_autoscaling(request=req, retry=self.gke_change_retry), location, self.project)

    @translated("container")
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
        return _op_state(self._gke.update_node_pool(request=req, retry=self.gke_change_retry), location, self.project)

    @translated("container")
    def update_cluster(self, location: str, name: str, release_channel: str | None = None) -> OperationState:
        from google.cloud import container_v1 as c
        update = c.ClusterUpdate()
        if release_channel:
            update.desired_release_channel = c.ReleaseChannel(channel=c.ReleaseChannel.Channel[release_channel])
        op = self._gke.update_cluster(name=self.cluster_path(location, name), update=update, retry=self.gke_change_retry)
        return _op_state(op, location, self.project)

    # Deletes exist only for a pause the user declared and approved (lifecycle: paused).
    @translated("container")
    def delete_node_pool(self, location: str, cluster: str, pool: str) -> OperationState:
        try:
            op = self._gke.delete_node_pool(name=f"{self.cluster_path(location, cluster)}/nodePools/{pool}",
                                            retry=self.gke_change_retry)
        except gexc.NotFound:
            return OperationState(name="", status="NOT_FOUND")
        return _op_state(op, location, self.project)

    @translated("container")
    def delete_cluster(self, location: str, name: str) -> OperationState:
        try:
            op = self._gke.delete_cluster(name=self.cluster_path(location, name), retry=self.gke_change_retry)
        except gexc.NotFound:
            return OperationState(name="", status="NOT_FOUND")
        return _op_state(op, location, self.project)

    @translated("container")
    def running_operations(self, location: str) -> list[OperationState]:
        resp = self._gke.list_operations(parent=self._loc(location), retry=self.gke_retry)
        return [s for s in (_op_state(op, location, self.project) for op in resp.operations) if s.status != "DONE"]

    @translated("container")
    def get_operation(self, name: str) -> OperationState:
        op = self._gke.get_operation(name=name, retry=self.gke_retry)
        error, code = _op_error(op)
        return OperationState(name=name, status=op.status.name, error=error, operation_type=op.operation_type.name,
                              error_code=code)

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
                    cls = OPERATION_ERRORS.get(state.error_code, OperationFailed)
                    raise cls(f"{ERR_OPERATION}: {op.name}: {state.error}", code=state.error_code)
                return state
            if now - start > timeout:
                raise OperationTimeout(f"{ERR_OPERATION_TIMEOUT}: {op.name} still {state.status} after "
                                       f"{now - start:.0f}s (limit {timeout:.0f}s)",
                                       "it goes on in GKE: materialize again later, gpuplat waits for it")
            if progress and now - last_report >= progress_every:
                progress(now - start, state.status)
                last_report = now
            self.sleeper(interval)
            interval = min(interval * 2, max_interval)

    # ---- Service Usage ---------------------------------------------------------------------------
    @translated("serviceusage")
    def enabled_services(self) -> set[str]:
        # Service Usage disabled answers SERVICE_DISABLED naming serviceusage itself: ServiceUsageDisabled.
        pager = self._usage.list_services(request={"parent": f"projects/{self.project}",
                                                   "filter": "state:ENABLED", "page_size": 200},
                                          retry=self.retry)
        return {s.config.name or s.name.rsplit("/", 1)[-1] for s in pager}

    @translated("serviceusage")
    def enable_services(self, names: list[str], timeout: float = 300.0) -> None:
        """Enabling is idempotent: a lost answer is simply asked again. The operation is polled with the same
        retry (a 429 or 503 on `operations.get` is Service Usage's quota or a hiccup, not a failure)."""
        for i in range(0, len(names), 20):  # batch_enable_services takes at most 20
            op = self._usage.batch_enable_services(
                request={"parent": f"projects/{self.project}", "service_ids": names[i:i + 20]}, retry=self.retry)
            result = op.result(timeout=timeout, retry=self.retry)
            # Each enabled Service names its consumer by number: SERVICE_DISABLED answers may use either form.
            parents = {svc.parent.removeprefix("projects/") for svc in getattr(result, "services", [])}
            self.enabled_marks.mark(self.project, names[i:i + 20], next(iter(parents - {self.project}), ""))

    # ---- Secret Manager ----------------------------------------------------------------------------
    @translated("secretmanager")
    def secret_ids(self) -> set[str]:
        pager = self._secrets.list_secrets(request={"parent": f"projects/{self.project}", "page_size": 250},
                                           retry=self.retry)
        return {s.name.rsplit("/", 1)[-1] for s in pager}

    @translated("secretmanager")
    def latest_version(self, secret_id: str) -> tuple[str, str, str] | None:
        """(number, state, create time) of the version `latest` names, as ESO reads it: the most recently
        created one, whatever its state (ENABLED, DISABLED, DESTROYED); None for a secret without versions
        (or none). Number and create time together name one payload: a secret deleted and created again
        numbers its versions from 1 again."""
        try:
            v = self._secrets.get_secret_version(
                name=f"projects/{self.project}/secrets/{secret_id}/versions/latest", retry=self.retry)
        except gexc.NotFound:
            return None
        return v.name.rsplit("/", 1)[-1], v.state.name, str(v.create_time)

    @translated("secretmanager")
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

    @translated("secretmanager")
    def add_secret_version(self, secret_id: str, value: bytes, attempts: int = 4) -> None:
        """Add one version, exactly one: AddSecretVersion is not idempotent, so a call whose answer was lost
        (a 5xx, a timeout: it may have been applied) is retried only when the secret's latest version is
        still the one before it."""
        before = self.latest_version(secret_id)
        for attempt in range(attempts):
            try:
                self._secrets.add_secret_version(
                    request={"parent": f"projects/{self.project}/secrets/{secret_id}", "payload": {"data": value}},
                    retry=None)
                return
            except Exception as exc:
                if not is_server_side_transient(exc) or attempt == attempts - 1:
                    raise
                self.sleeper(min(0.5 * 2 ** attempt, 5.0))
                if self.latest_version(secret_id) != before:
                    return  # it was applied; only its answer was lost

    @translated("secretmanager")
    def access_secret(self, secret_id: str, version: str = "latest") -> bytes | None:
        """A version's value (by default the latest, what ESO reads), or None when there is none: for
        comparisons made in this process only, never to be logged or returned beyond the caller. A version
        that is DISABLED or DESTROYED raises `SecretVersionUnreadable`."""
        try:
            resp = self._secrets.access_secret_version(
                name=f"projects/{self.project}/secrets/{secret_id}/versions/{version}", retry=self.retry)
        except gexc.NotFound:
            return None
        return resp.payload.data

    # ---- Compute quotas -------------------------------------------------------------------------------
    @translated("compute")
    def region_quotas(self, region: str) -> dict[str, Quota]:
        r = self._regions.get(project=self.project, region=region, retry=self.retry)
        return {q.metric: Quota(q.metric, region, q.limit, q.usage) for q in r.quotas}

    @translated("compute")
    def project_quotas(self) -> dict[str, Quota]:
        p = self._projects.get(project=self.project, retry=self.retry)
        return {q.metric: Quota(q.metric, "global", q.limit, q.usage) for q in p.quotas}

    # ---- Compute: what outlives a cluster ------------------------------------------------------------
    @translated("compute")
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

    @translated("compute")
    def delete_disk(self, zone: str, name: str) -> None:
        from google.cloud import compute_v1
        try:
            self.shared_client("compute", lambda: compute_v1.DisksClient(**self._kwargs("compute")), "disks").delete(
                project=self.project, zone=zone, disk=name, retry=self.retry).result(timeout=300)
        except gexc.NotFound:
            pass

    # ---- Billing Catalog ----------------------------------------------------------------------------------
    @translated("billing")
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


# Read from the raw protobuf message under the client's wrapper: proto-plus converts every field it hands
# out (a dozen conversions per pool), and a drift tick reads every cluster of the fleet each minute.
def _enum(msg, field: str) -> str:
    """The name of an enum field's value (its number when this client does not know it)."""
    number = getattr(msg, field)
    value = msg.DESCRIPTOR.fields_by_name[field].enum_type.values_by_number.get(number)
    return value.name if value is not None else str(number)


def _taint(t) -> Taint:
    effect = _enum(t, "effect")
    return Taint(t.key, t.value, _EFFECT_TO_K8S.get(effect, effect))


def _pool_state(p) -> NodePoolState:
    config, auto = p.config, p.autoscaling
    acc = config.accelerators[0] if config.accelerators else None
    driver = ""
    if acc is not None and acc.HasField("gpu_driver_installation_config"):
        driver = _enum(acc.gpu_driver_installation_config, "gpu_driver_version")
        driver = "" if driver.endswith("UNSPECIFIED") else driver
    return NodePoolState(
        name=p.name, status=_enum(p, "status"), machine_type=config.machine_type, disk_size_gb=config.disk_size_gb,
        accelerator_type=acc.accelerator_type if acc else "", accelerator_count=acc.accelerator_count if acc else 0,
        gpu_driver_version=driver, autoscaling_enabled=auto.enabled,
        min_nodes=auto.min_node_count, max_nodes=auto.max_node_count,
        taints=tuple(_taint(t) for t in config.taints),
        labels=dict(config.labels), service_account=config.service_account, version=p.version,
        image_type=config.image_type, locations=tuple(p.locations), oauth_scopes=tuple(config.oauth_scopes),
        status_message=p.status_message, conditions=_conditions(p.conditions))


def _conditions(conditions) -> tuple[tuple[str, str], ...]:
    return tuple((_enum(c, "code") if c.code else _enum(c, "canonical_code"), c.message) for c in conditions)


# Google's APIs trim an answer to the X-Goog-FieldMask system parameter
# (https://cloud.google.com/apis/docs/system-parameters). A cluster as GKE sends it whole (every node
# pool's full config, addons, instance group URLs, ...) cost the client more to parse into messages than
# the rest of a GetCluster; these are the fields `_cluster_state` and `_pool_state` read, and only those
# (tests/sandbox/test_gke.py compares a cluster's state read whole and read through this mask).
FIELD_MASK_HEADER = "x-goog-fieldmask"
CLUSTER_FIELDS = (
    "name", "location", "status", "statusMessage", "conditions", "releaseChannel.channel",
    "workloadIdentityConfig.workloadPool", "ipAllocationPolicy.useIpAliases", "networkConfig.datapathProvider",
    "endpoint", "currentMasterVersion", "masterAuth.clusterCaCertificate",
    "nodePools.name", "nodePools.status", "nodePools.statusMessage", "nodePools.conditions", "nodePools.version",
    "nodePools.locations", "nodePools.autoscaling", "nodePools.config.machineType", "nodePools.config.diskSizeGb",
    "nodePools.config.accelerators", "nodePools.config.taints", "nodePools.config.labels",
    "nodePools.config.serviceAccount", "nodePools.config.imageType", "nodePools.config.oauthScopes",
)
# The metadata of a GetCluster and of a ListClusters, joined once rather than on every read of a tick.
_CLUSTER_MASK = ((FIELD_MASK_HEADER, ",".join(CLUSTER_FIELDS)),)
_CLUSTERS_MASK = ((FIELD_MASK_HEADER, ",".join(f"clusters.{f}" for f in CLUSTER_FIELDS)),)


def _cluster_state(cluster) -> ClusterState:
    c = type(cluster).pb(cluster)
    return ClusterState(
        name=c.name, location=c.location, status=_enum(c, "status"),
        release_channel=_enum(c.release_channel, "channel"), workload_pool=c.workload_identity_config.workload_pool,
        vpc_native=bool(c.ip_allocation_policy.use_ip_aliases),
        datapath_provider=_enum(c.network_config, "datapath_provider"),
        endpoint=c.endpoint, master_version=c.current_master_version,
        node_pools=tuple(_pool_state(p) for p in c.node_pools),
        ca_certificate=c.master_auth.cluster_ca_certificate, status_message=c.status_message,
        conditions=_conditions(c.conditions))


# A failed operation's StatusCondition code (cluster_service.proto), as gpuplat's error class.
OPERATION_ERRORS = {"GCE_STOCKOUT": Stockout, "GCE_QUOTA_EXCEEDED": OperationQuota}


def _op_error(op) -> tuple[str, str]:
    """What went wrong and GKE's StatusCondition code for it ("" when it gave none)."""
    codes = [c.code.name for c in (*op.cluster_conditions, *op.nodepool_conditions)
             if c.code and not c.code.name.endswith("UNKNOWN")]
    code = codes[0] if codes else ""
    if op.error and (op.error.code or op.error.message):
        return op.error.message or f"code {op.error.code}", code
    return op.status_message or "", code


def _op_state(op, location: str, project: str) -> OperationState:
    name = op.name if op.name.startswith("projects/") else f"projects/{project}/locations/{location}/operations/{op.name}"
    error, code = _op_error(op) if op.status.name == "DONE" else ("", "")
    return OperationState(name=name, status=op.status.name, error=error, operation_type=op.operation_type.name,
                          error_code=code)
