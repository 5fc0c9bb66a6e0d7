"""Everything that talks to the outside world, behind one Dagster resource.

`GpuplatResource.connect(target)` gives an environment's clients. Resources never read the
environment config file: the asset layer hands them a `Target`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import yaml
from dagster import ConfigurableResource
from pydantic import Field

from .google import Google
from .kube import Kube, write_private
from .models import ClusterState
from .sandbox_runtime import ensure_sandbox, sandbox_dir, sandbox_gitops_groups, sandbox_kubeconfig

CLUSTER_KUBECONFIG_VAR = "CLUSTER_KUBECONFIG"


@dataclass(frozen=True)
class Target:
    """Where one environment lives: all a resource needs to know about it."""

    env: str
    kind: str  # gke | hetzner | byo
    project: str
    location: str
    cluster: str
    sandbox: bool
    kubeconfig: str  # explicit path from the config, or "" for the default


class Connection:
    """One environment's clients, built lazily."""

    def __init__(self, target: Target, kube_dir: Path, sandbox_state: Path, retry_deadline: float = 180.0):
        self.target = target
        self.kube_dir = kube_dir
        self.sandbox_state = sandbox_state
        self.retry_deadline = retry_deadline

    @cached_property
    def sandbox_urls(self) -> dict[str, str] | None:
        return ensure_sandbox(self.sandbox_state) if self.target.sandbox else None

    @cached_property
    def google(self) -> Google:
        return Google(self.target.project, endpoints=self.sandbox_urls, retry_deadline=self.retry_deadline)

    @property
    def kubeconfig_path(self) -> Path:
        if self.target.kubeconfig:
            return Path(self.target.kubeconfig)
        # Off GKE the user's kubeconfig may come from CLUSTER_KUBECONFIG, as in the seed's Makefile;
        # the shell's KUBECONFIG and ~/.kube/config are never read.
        if self.target.kind != "gke" and os.environ.get(CLUSTER_KUBECONFIG_VAR):
            return Path(os.environ[CLUSTER_KUBECONFIG_VAR])
        return self.kube_dir / f"{self.target.env}.kubeconfig"

    def write_gke_kubeconfig(self, cluster: ClusterState) -> Path:
        """The environment's dedicated kubeconfig for a GKE cluster (never merged into ~/.kube/config)."""
        path = self.kubeconfig_path
        if self.sandbox_urls is not None:
            return sandbox_kubeconfig(self.sandbox_urls, self.google.cluster_path(cluster.location, cluster.name), path)
        ctx = f"gke_{self.target.project}_{cluster.location}_{cluster.name}"
        doc = {
            "apiVersion": "v1", "kind": "Config", "current-context": ctx,
            "clusters": [{"name": ctx, "cluster": {"server": f"https://{cluster.endpoint}",
                                                   "certificate-authority-data": cluster.ca_certificate}}],
            "contexts": [{"name": ctx, "context": {"cluster": ctx, "user": ctx}}],
            "users": [{"name": ctx, "user": {"exec": {
                "apiVersion": "client.authentication.k8s.io/v1beta1", "command": "gke-gcloud-auth-plugin",
                "provideClusterInfo": True, "interactiveMode": "Never"}}}],
        }
        return write_private(path, yaml.safe_dump(doc))

    def provide_sandbox_kubeconfig(self) -> None:
        """Off GKE in the sandbox: stand in for the user copying their cluster's kubeconfig."""
        if self.sandbox_urls is not None and not self.kubeconfig_path.exists():
            sandbox_kubeconfig(self.sandbox_urls, self.target.cluster, self.kubeconfig_path)

    def sandbox_groups(self, cluster_id: str, groups: list[dict]) -> None:
        if self.sandbox_urls is not None and groups:
            sandbox_gitops_groups(self.sandbox_urls, cluster_id, groups)

    @cached_property
    def kube(self) -> Kube:
        return Kube(str(self.kubeconfig_path))


class GpuplatResource(ConfigurableResource):
    """Builds the Google and Kubernetes clients for an environment's target, lazily."""

    kube_dir: str = Field(default=".gpuplat/kube",
                          description="Where gpuplat writes each environment's dedicated kubeconfig.")
    sandbox_state_dir: str = Field(default="", description="The sandbox's state directory; empty means "
                                   "GPUPLAT_SANDBOX_DIR or .gpuplat/sandbox.")

    def connect(self, target: Target, retry_deadline: float = 180.0) -> Connection:
        """`retry_deadline` bounds how long transient Google errors are retried (a sensor tick has 60 s)."""
        state = Path(self.sandbox_state_dir).resolve() if self.sandbox_state_dir else sandbox_dir()
        return Connection(target, Path(self.kube_dir), state, retry_deadline)
