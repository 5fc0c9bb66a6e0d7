"""What resources return: plain dataclasses in gpuplat's words, never SDK types."""

from __future__ import annotations

from dataclasses import dataclass, field


# GKE statuses of a cluster or node pool with an operation in flight: waited on, never changed.
GKE_BUSY = ("PROVISIONING", "RECONCILING", "STOPPING")


@dataclass(frozen=True)
class Taint:
    key: str
    value: str
    effect: str  # Kubernetes spelling: NoSchedule, PreferNoSchedule, NoExecute


@dataclass(frozen=True)
class NodePoolState:
    name: str
    status: str
    machine_type: str
    disk_size_gb: int
    accelerator_type: str
    accelerator_count: int
    gpu_driver_version: str
    autoscaling_enabled: bool
    min_nodes: int
    max_nodes: int
    taints: tuple[Taint, ...]
    labels: dict
    service_account: str
    version: str
    image_type: str
    locations: tuple[str, ...]
    oauth_scopes: tuple[str, ...] = ()
    # Why the pool is in ERROR / RUNNING_WITH_ERROR, and GKE's StatusConditions ((code, message), e.g.
    # ("GCE_STOCKOUT", "...")): where GKE reports stockouts and quota failures of the pool's VMs.
    status_message: str = ""
    conditions: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class ClusterState:
    name: str
    location: str
    status: str
    release_channel: str
    workload_pool: str
    vpc_native: bool
    datapath_provider: str
    endpoint: str
    master_version: str
    node_pools: tuple[NodePoolState, ...]
    ca_certificate: str = ""
    status_message: str = ""
    conditions: tuple[tuple[str, str], ...] = ()

    def pool(self, name: str) -> NodePoolState | None:
        return next((p for p in self.node_pools if p.name == name), None)


@dataclass(frozen=True)
class Quota:
    metric: str
    scope: str  # "global" or a region
    limit: float | None  # None: Compute does not report this metric (unknown, never 0)
    usage: float

    @property
    def available(self) -> float:
        return float("inf") if self.limit is None else self.limit - self.usage


@dataclass(frozen=True)
class OperationState:
    name: str
    status: str
    error: str = ""
    operation_type: str = ""
    # GKE's StatusCondition code for a failed operation (GCE_STOCKOUT, GCE_QUOTA_EXCEEDED, ...), "" if none.
    error_code: str = ""


@dataclass(frozen=True)
class SkuPrice:
    description: str
    per_hour: float
    currency: str
    unit: str


@dataclass(frozen=True)
class Leftover:
    """A paid Compute resource that can outlive a cluster: a forwarding rule, an address, a disk."""

    kind: str  # "forwarding rule" | "address" | "disk"
    name: str
    scope: str  # zones/<zone>, regions/<region> or global
    size_gb: int = 0
    disk_type: str = ""


@dataclass(frozen=True)
class KubeTarget:
    """Where a Kubernetes client points: logged before anything touches the cluster."""

    kubeconfig: str
    context: str
    server: str


@dataclass(frozen=True)
class KubeIdentity:
    """Which cluster a kube target is: recorded at the first materialization, checked before any write."""

    server: str
    kube_system_uid: str

    def describe(self) -> str:
        return f"{self.server} (kube-system uid {self.kube_system_uid})"


@dataclass(frozen=True)
class NodeState:
    name: str
    provider_id: str
    labels: dict
    annotations: dict
    taints: tuple[Taint, ...]
    allocatable: dict
    unschedulable: bool
    ready: bool
    created: str
    kernel: str = ""
    capacity: dict = field(default_factory=dict)  # status.capacity: what the machine has (cpu, memory)


@dataclass(frozen=True)
class PodState:
    name: str
    namespace: str
    node: str
    phase: str
    labels: dict
    annotations: dict
    owner_kinds: tuple[str, ...]
    priority: int
    gpu_request: int
    requests: dict
    volumes: tuple[dict, ...]
    node_selector: dict
    has_affinity: bool
    tolerations: tuple[dict, ...]
    finished: str = ""  # when its last container terminated (ISO 8601), for a pod that ended


@dataclass(frozen=True)
class ScaleUpFailure:
    """A cluster autoscaler FailedScaleUp event on a pod: `cause` is stockout, quota or other."""

    pod: tuple[str, str]  # (namespace, name)
    message: str
    cause: str
    when: str = ""


@dataclass(frozen=True)
class PdbState:
    name: str
    namespace: str
    selector: dict
    disruptions_allowed: int


@dataclass(frozen=True)
class ServerInfo:
    git_version: str
    platform: str


@dataclass
class KubeObject:
    """A Kubernetes object as plain data (apiVersion, kind, metadata, spec, status)."""

    body: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.body.get("metadata", {}).get("name", "")

    @property
    def annotations(self) -> dict:
        return self.body.get("metadata", {}).get("annotations") or {}

    @property
    def labels(self) -> dict:
        return self.body.get("metadata", {}).get("labels") or {}


@dataclass(frozen=True)
class NodePoolSpec:
    name: str
    machine_type: str
    min_nodes: int
    max_nodes: int
    disk_size_gb: int = 100
    accelerator_type: str = ""
    accelerator_count: int = 0
    gpu_driver_version: str = ""  # DEFAULT / LATEST: GKE installs the driver itself
    taints: tuple[Taint, ...] = ()
    labels: tuple[tuple[str, str], ...] = ()
    service_account: str = ""
    # The raw API adds no storage scope (gcloud's defaults are gcloud's): the fork asks cloud-platform.
    oauth_scopes: tuple[str, ...] = ("https://www.googleapis.com/auth/cloud-platform",)


@dataclass(frozen=True)
class ClusterSpec:
    name: str
    location: str
    release_channel: str
    workload_pool: str
    datapath_provider: str
    vpc_native: bool
    cpu_pool: NodePoolSpec
