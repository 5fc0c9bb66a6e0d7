"""The gpuplat sandbox: a local fake cloud on loopback.

It speaks the wire protocols of GKE (container v1 REST), Service Usage, Secret Manager, Compute
quotas, the Cloud Billing Catalog and the Kubernetes API, so the production code path (the official
Google client libraries and the official kubernetes client) is what runs against it.

Everything behind those protocols is a simulation, and every simulated controller says so in its
docstring. The sandbox imports nothing from the rest of gpuplat.
"""
