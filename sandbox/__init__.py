"""The gpuplat sandbox: a local fake cloud on loopback.

It speaks the wire protocols of GKE (container v1 REST), Service Usage, Secret Manager, Compute,
the Cloud Billing Catalog and the Kubernetes API, so the production code path (the official Google
client libraries, the official kubernetes client, `gcloud` and `kubectl`) is what runs against it.
Everything behind those protocols is a simulation, and every simulated controller says so in its
docstring. The sandbox imports nothing from the rest of gpuplat.

Layers, bottom to top; a module imports its own layer and those below, never one above, and there
is no import cycle (`tests/unit/test_layering.py` checks both, and that no module passes 600 lines):

    core      errors, simulated clock, faults, call counters, the persisted state, `SandboxContext`
    wire      HTTP server (TLS, routing, counting, faults), Google REST conventions,
              Kubernetes REST conventions (Status, bodies, content types)
    stores    each API's state and the queries over it: projects, GKE, Compute quotas and usage,
              Secret Manager, Kubernetes objects (`KubeStore`)
    apis      one module per API: serviceusage, gke (+ gke_pools, gke_ops, gke_build), compute,
              secretmanager, billing, kube_objects (+ kube_discovery, kube_writes, kube_patch,
              kube_fields, kube_select)
    sims      simulated controllers acting through the stores: GKE's control plane and node pools,
              the cluster autoscaler, Argo CD, External Secrets, the GPU Operator, workloads, hosts
    admin     the admin API: the hand of tests and demos (faults, clock, drift, workloads)
    app       wiring: one state, one clock, one server per API
    __main__  the command line over the admin API

A handler that makes something due (a polled GKE operation) asks the running sandbox to run its
simulations (`SandboxContext.reconcile`) instead of importing them.
"""
