"""The sandbox's simulated controllers: what would run inside a real cloud and cluster.

Every one of them is a simulation and says what real component it stands in for:

- `sim_hosts`: the pre-provisioned bring-your-own and Hetzner clusters, and the simulated GPU
  hosts (host profiles) behind their GPU nodes (`bootstrap`).
- `sim_argocd`: the Argo CD bootstrap Job (helm run from a container), Argo CD's application
  controller (Synced/Healthy) and ApplicationSet controller (git files generator, groups from the
  sandbox instead of git); the platform layer's External Secrets Operator appears with its group.
- `sim_eso`: External Secrets Operator (stores validated, ExternalSecrets synced from the fake
  Secret Manager or a fake external backend).
- `sim_gpu`: the NVIDIA GPU Operator off GKE, and the kubelet running gpuplat's preflight probe
  against a simulated host.
- `sim_autoscaler`: kube-scheduler, kubelet start-up and the GKE cluster autoscaler for GPU pools.
- `sim_workloads`: admin verbs that add GPU workloads and scale-down blockers.

`CONTROLLERS` run in order under the state lock before every request (`Sandbox.reconcile`): each is
O(objects), copies nothing and writes nothing when nothing changed, so an idle sandbox stays clean.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from . import gke, sim_argocd, sim_eso, sim_hosts, sim_workloads
from .sim_argocd import (argocd_applications, argocd_applicationsets, argocd_bootstrap_job, DEFAULT_GROUPS,
                         groups_for)
from .sim_autoscaler import pod_blocking_reason, scheduler_and_autoscaler
from .sim_eso import external_secrets_operator
from .sim_gpu import gpu_operator, helm_values, node_problem, preflight_pods
from .sim_hosts import (BYO_CLUSTER, H100_UBUNTU2404, HETZNER_CLUSTER, RTX4000_SFF_ADA_UBUNTU2404, bootstrap,
                        host_profile, write_host_root)

if TYPE_CHECKING:
    from .app import Sandbox

__all__ = [
    "ADMIN_ROUTES", "BYO_CLUSTER", "CONTROLLERS", "DEFAULT_GROUPS", "H100_UBUNTU2404", "HETZNER_CLUSTER",
    "RTX4000_SFF_ADA_UBUNTU2404", "argocd_applications", "argocd_applicationsets", "argocd_bootstrap_job",
    "bootstrap", "external_secrets_operator", "gpu_operator", "groups_for", "helm_values", "host_profile",
    "node_problem", "pod_blocking_reason", "preflight_pods", "scheduler_and_autoscaler", "write_host_root",
]


def gke_operations(sb: "Sandbox") -> None:
    """Simulation of GKE's control plane finishing long-running operations once their simulated time
    is up (see `gke.reconcile`)."""
    gke.reconcile(sb)


# Order matters only within one pass: a Job's CRDs before the ApplicationSets that need them,
# Applications' status before the GPU Operator that waits for Synced, GPUs advertised before the
# scheduler places GPU pods, pods bound before the preflight kubelet runs them.
CONTROLLERS: list[Callable[["Sandbox"], None]] = [
    gke_operations,
    argocd_bootstrap_job,
    argocd_applicationsets,
    argocd_applications,
    external_secrets_operator,
    gpu_operator,
    scheduler_and_autoscaler,
    preflight_pods,
]

ADMIN_ROUTES = [
    *sim_hosts.ADMIN_ROUTES,
    *sim_argocd.ADMIN_ROUTES,
    *sim_eso.ADMIN_ROUTES,
    *sim_workloads.ADMIN_ROUTES,
]

