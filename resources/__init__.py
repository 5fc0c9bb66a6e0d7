"""Everything that talks to the outside world, behind one Dagster resource.

`GpuplatResource.connect(target)` gives an environment's clients. Resources never read the
environment config file: the asset layer hands them a `Target`.
"""

from __future__ import annotations

import base64
import os
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Callable

import yaml
from dagster import ConfigurableResource
from pydantic import Field

from .credentials import GoogleTokens, tokens_for
from .errors import ClusterNotRunning, KubeTargetMismatch
from .google import Google
from .iam import Iam
from .kube import Endpoint, Kube, write_private_from
from .models import ClusterState, KubeIdentity
from .sandbox_runtime import ensure_sandbox, sandbox_dir, sandbox_kubeconfig, sandbox_now, sandbox_serve_git

# GKE states in which the control plane answers (RECONCILING: an update is in progress, the API is up).
API_UP = ("RUNNING", "RECONCILING")
ERR_NOT_RUNNING = "cluster not running yet"
ERR_OTHER_CLUSTER = "the kubeconfig reaches another cluster than the one this environment recorded"
ADOPT_TAG = "gpuplat/adopt-kube-target"


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
    # The environment variable naming the kubeconfig (the seed's CLUSTER_KUBECONFIG), when the
    # environment opted in; never applied to every environment at once.
    kubeconfig_env: str = ""
    # The identity recorded at this environment's first materialization (off GKE): a kubeconfig
    # that now reaches another cluster is refused before anything is sent there.
    identity: KubeIdentity | None = None


class Connection:
    """One environment's clients, built lazily."""

    def __init__(self, target: Target, kube_dir: Path, sandbox_state: Path, retry_deadline: float = 180.0,
                 progress: Callable[[str], None] | None = None):
        self.target = target
        self.kube_dir = kube_dir
        self.sandbox_state = sandbox_state
        self.retry_deadline = retry_deadline
        self.progress = progress  # where long waits report (a run's log)
        # How the sandbox is found (or started): a tick's connections ask once between them (memo.memoize).
        self.find_sandbox: Callable[[Path], dict[str, str]] = ensure_sandbox

    @cached_property
    def sandbox_urls(self) -> dict[str, str] | None:
        return self.find_sandbox(self.sandbox_state) if self.target.sandbox else None

    def now(self) -> float:
        """The clusters' time: the sandbox's simulated clock on the sandbox, this host's elsewhere."""
        return time.time() if self.sandbox_urls is None else sandbox_now(self.sandbox_urls)

    @cached_property
    def google(self) -> Google:
        return Google(self.target.project, endpoints=self.sandbox_urls, retry_deadline=self.retry_deadline,
                      progress=self.progress)

    @cached_property
    def iam(self) -> Iam:
        """Service accounts, IAM policies and Artifact Registry (resources/iam.py)."""
        return Iam(self.target.project, endpoints=self.sandbox_urls, retry_deadline=self.retry_deadline,
                   progress=self.progress)

    @cached_property
    def tokens(self) -> GoogleTokens:
        """Google access tokens for GKE's Kubernetes API: ADC, or the sandbox's service account."""
        if self.sandbox_urls is not None:
            return tokens_for(self.sandbox_state / "credentials.json")
        return tokens_for()

    @property
    def kubeconfig_path(self) -> Path:
        if self.target.kubeconfig:
            return Path(self.target.kubeconfig)
        # The seed's CLUSTER_KUBECONFIG, for the environment that opted in; the shell's KUBECONFIG
        # and ~/.kube/config are never read.
        if self.target.kubeconfig_env and os.environ.get(self.target.kubeconfig_env):
            return Path(os.environ[self.target.kubeconfig_env])
        return self.kube_dir / f"{self.target.env}.kubeconfig"

    def write_gke_kubeconfig(self, cluster: ClusterState) -> Path:
        """The environment's kubeconfig for people (kubectl, the seed's scripts), as `gcloud container
        clusters get-credentials` writes it; rewritten, atomically, whenever GKE's endpoint or CA moved."""
        source = (cluster.location, cluster.name, cluster.endpoint, cluster.ca_certificate, self.target.project,
                  str(self.sandbox_state) if self.sandbox_urls is not None else None)
        return write_private_from(self.kubeconfig_path, source, lambda: self._gke_kubeconfig(cluster))

    def _gke_kubeconfig(self, cluster: ClusterState) -> str:
        ctx = f"gke_{self.target.project}_{cluster.location}_{cluster.name}"
        plugin: dict = {"apiVersion": "client.authentication.k8s.io/v1beta1", "command": "gke-gcloud-auth-plugin",
                        "provideClusterInfo": True, "interactiveMode": "Never"}
        if self.sandbox_urls is not None:  # the plugin asks gcloud, and gcloud asks the sandbox
            plugin["env"] = [{"name": "CLOUDSDK_CONFIG", "value": str(self.sandbox_state / "gcloud")}]
        doc = {
            "apiVersion": "v1", "kind": "Config", "current-context": ctx,
            "clusters": [{"name": ctx, "cluster": {"server": f"https://{cluster.endpoint}",
                                                   "certificate-authority-data": cluster.ca_certificate}}],
            "contexts": [{"name": ctx, "context": {"cluster": ctx, "user": ctx}}],
            "users": [{"name": ctx, "user": {"exec": plugin}}],
        }
        return yaml.safe_dump(doc)

    def sandbox_git(self, repo_url: str, checkout: Path) -> None:
        """In the sandbox only: serve the platform repository from its local checkout."""
        if self.sandbox_urls is not None:
            sandbox_serve_git(self.sandbox_urls, repo_url, checkout)

    @cached_property
    def kube(self) -> Kube:
        """The cluster's API, proven to be this environment's cluster before anything is sent.

        GKE: endpoint and CA as GKE reports them now, a Google token; the kubeconfig file is only
        (re)written for people. Elsewhere: the kubeconfig file as it is now, refused when it reaches
        another server than the one recorded, or a cluster with another kube-system namespace.
        """
        if self.target.kind == "gke":
            return self._gke_kube()
        path = self.kubeconfig_path
        if self.sandbox_urls is not None and not path.exists():
            # The sandbox stands in for the user copying their cluster's kubeconfig.
            sandbox_kubeconfig(self.sandbox_urls, self.target.cluster, path)
        kube = Kube(str(path))
        expected = self.target.identity
        if expected is not None:
            remedy = (f"point {path} back at this environment's cluster; if the cluster was replaced on purpose, "
                      f"materialize cluster with the run tag {ADOPT_TAG}=true to record the new one")
            if kube.target.server != expected.server:
                raise KubeTargetMismatch(f"{ERR_OTHER_CLUSTER}: {path} points at {kube.target.server}, this "
                                         f"environment's cluster is {expected.describe()}", remedy)
            found = kube.identity()
            if found.kube_system_uid != expected.kube_system_uid:
                raise KubeTargetMismatch(f"{ERR_OTHER_CLUSTER}: {path} reaches {found.describe()}, this "
                                         f"environment's cluster is {expected.describe()}", remedy)
        return kube

    def _gke_kube(self) -> Kube:
        t = self.target
        cluster = self.google.get_cluster(t.location, t.cluster)
        if cluster is None or cluster.status not in API_UP or not cluster.endpoint:
            raise ClusterNotRunning(f"{ERR_NOT_RUNNING}: GKE cluster {t.cluster} in {t.location} is "
                                    f"{cluster.status if cluster else 'absent'}",
                                    "materialize cluster: the GKE cluster does not exist or is still being created")
        path = self.write_gke_kubeconfig(cluster)
        ca_file = write_private_from(self.kube_dir / f"{t.env}.ca.crt", cluster.ca_certificate,
                                     lambda: base64.b64decode(cluster.ca_certificate).decode())
        endpoint = Endpoint(server=f"https://{cluster.endpoint}", ca_file=str(ca_file), token=self.tokens.token,
                            context=f"gke_{t.project}_{cluster.location}_{cluster.name}",
                            invalidate=self.tokens.invalidate)
        return Kube(str(path), endpoint=endpoint)


class GpuplatResource(ConfigurableResource):
    """Builds the Google and Kubernetes clients for an environment's target, lazily."""

    kube_dir: str = Field(default=".gpuplat/kube",
                          description="Where gpuplat writes each environment's dedicated kubeconfig.")
    sandbox_state_dir: str = Field(default="", description="The sandbox's state directory; empty means "
                                   "GPUPLAT_SANDBOX_DIR or .gpuplat/sandbox.")

    def connect(self, target: Target, retry_deadline: float = 180.0,
                progress: Callable[[str], None] | None = None) -> Connection:
        """`retry_deadline` bounds how long transient Google errors are retried (a sensor tick has 60 s);
        `progress` hears how a long wait goes (a run's log)."""
        state = Path(self.sandbox_state_dir).resolve() if self.sandbox_state_dir else sandbox_dir()
        return Connection(target, Path(self.kube_dir), state, retry_deadline, progress)
