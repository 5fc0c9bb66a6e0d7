"""The sandbox's simulated controllers: what would run inside a real cloud and cluster.

Every one of them is a simulation and says what real component it stands in for:

- `hosts`: the pre-provisioned bring-your-own and Hetzner clusters, and the simulated GPU
  hosts (host profiles) behind their GPU nodes (`bootstrap`).
- `git`: the git server Argo CD reads, each repository URL served from a local checkout.
- `argocd_install`: Argo CD installed by Helm (gpuplat's bootstrap Job, or `helm upgrade --install`
  from a laptop): CRDs, workloads named after the release, Helm's release record.
- `argocd`: Argo CD's application controller (Synced/Healthy, manual apps dormant) and
  ApplicationSet controller (git files generator); the platform layer's External Secrets Operator
  appears with its Application. `argocd_sync`: directory sources synced from the git server.
- `eso`: External Secrets Operator (stores validated, ExternalSecrets synced from the fake
  Secret Manager or a fake external backend).
- `gpu`: the NVIDIA GPU Operator off GKE, and the kubelet running gpuplat's preflight probe
  against a simulated host.
- `autoscaler`: kube-scheduler, kubelet start-up and the GKE cluster autoscaler for GPU pools.
- `workloads`: admin verbs that add GPU workloads and scale-down blockers.
- `node_leases`: the kubelets' heartbeat Leases in `kube-node-lease`.
- `disruption`: the disruption controller (PodDisruptionBudget status); a budget with no disruption
  allowed holds a node pool's deletion (`gke_control.drain_blocked`).
- `cloud_leftovers`: GKE's Gateway controller and the persistent disk CSI driver: load balancers and
  disks in the project, released with their objects, orphaned with a deleted cluster.

`CONTROLLERS` run in order under the state lock before every request (`Sandbox.reconcile`), for the
clusters that request touches (`util.kube_clusters` yields those): each is O(objects of those clusters),
copies nothing and writes nothing when nothing changed, so an idle sandbox stays clean and a request
costs the same with 5 clusters or 500.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from . import argocd, argocd_install, eso, git, gke_control, hosts, workloads
from .argocd import argocd_applications, argocd_applicationsets
from .argocd_install import argocd_bootstrap_job
from .argocd_sync import argocd_directory_sync
from .autoscaler import scheduler_and_autoscaler
from .cloud_leftovers import gke_cloud_leftovers
from .disruption import disruption_budgets
from .eso import external_secrets_operator
from .gpu import gpu_operator, preflight_pods
from .hosts import bootstrap
from .node_leases import node_leases

if TYPE_CHECKING:
    from ..core import SandboxContext as Sandbox

__all__ = ["ADMIN_ROUTES", "CLUSTERLESS", "CONTROLLERS", "bootstrap"]


def gke_operations(sb: "Sandbox") -> None:
    """Simulation of GKE's control plane finishing long-running operations once their simulated time
    is up, or once a client polled them (see `gke_control.reconcile`)."""
    gke_control.reconcile(sb)


# Order matters only within one pass: a Job's CRDs before the ApplicationSets that need them,
# Applications' status before the GPU Operator that waits for Synced, GPUs advertised before the
# scheduler places GPU pods, pods bound before the preflight kubelet runs them.
CONTROLLERS: list[Callable[["Sandbox"], None]] = [
    gke_operations,
    argocd_bootstrap_job,
    argocd_applicationsets,
    argocd_directory_sync,
    argocd_applications,
    external_secrets_operator,
    gpu_operator,
    scheduler_and_autoscaler,
    disruption_budgets,
    preflight_pods,
    node_leases,
    gke_cloud_leftovers,
]

# The simulations that run for no cluster in particular (`Sandbox.reconcile`): every pass runs them, and
# what they change may be in any cluster.
CLUSTERLESS = frozenset({gke_operations})

ADMIN_ROUTES = [
    *hosts.ADMIN_ROUTES,
    *argocd.ADMIN_ROUTES,
    *argocd_install.ADMIN_ROUTES,
    *git.ADMIN_ROUTES,
    *eso.ADMIN_ROUTES,
    *workloads.ADMIN_ROUTES,
]
