"""Compute Engine resources that outlive a cluster and cost money: disks, addresses, forwarding rules.

Simulation: what a cluster's controllers leave behind in a real project (a PVC's persistent disk, a
Service's or Gateway's load balancer forwarding rule and its address), kept per project and scope
(`zones/<zone>`, `regions/<region>` or `global`) in the `compute.resources` section, shaped as
compute v1 messages. The simulated controllers create and release them; users list and delete them
through the API, as `gcloud compute ... list/delete` and the seed's pause audit do.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..core import SandboxContext as Sandbox

LINK = "https://www.googleapis.com/compute/v1"
# collection -> (compute#kind, the aggregated list's key inside each scope)
KINDS = {"disks": "compute#disk", "addresses": "compute#address", "forwardingRules": "compute#forwardingRule"}


def _all(sb: "Sandbox") -> dict:
    return sb.store.section("compute").setdefault("resources", {})


def scope_link(project: str, scope: str) -> str:
    return f"{LINK}/projects/{project}/{scope}"


def resource_id(*parts: str) -> str:
    return str(int(hashlib.sha1("/".join(parts).encode()).hexdigest()[:15], 16))


def items(sb: "Sandbox", project: str, collection: str) -> dict[str, dict[str, dict]]:
    """scope -> name -> resource, for one project and collection (the stored dicts)."""
    return _all(sb).setdefault(project, {}).setdefault(collection, {})


def put(sb: "Sandbox", project: str, collection: str, scope: str, resource: dict) -> dict:
    """Create or replace one resource (`scope`: zones/<z>, regions/<r> or global), filling what Compute fills."""
    name = resource["name"]
    out = {"kind": KINDS[collection], "id": resource_id(project, scope, collection, name),
           "creationTimestamp": sb.clock.rfc3339(), **resource,
           "selfLink": f"{scope_link(project, scope)}/{collection}/{name}"}
    if scope.startswith("zones/"):
        out["zone"] = scope_link(project, scope)
    elif scope.startswith("regions/"):
        out["region"] = scope_link(project, scope)
    items(sb, project, collection).setdefault(scope, {})[name] = out
    sb.store.mark()
    return out


def remove(sb: "Sandbox", project: str, collection: str, scope: str, name: str) -> dict | None:
    found = items(sb, project, collection).get(scope, {}).pop(name, None)
    if found is not None:
        sb.store.mark()
    return found
