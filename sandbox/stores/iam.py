"""IAM: service accounts, and the IAM policies of projects, service accounts and repositories.

Simulation: records in the sandbox state (`iam` section). What is strict because real IAM is:
- an account id is 6-30 characters matching `[a-z]([-a-z0-9]*[a-z0-9])` (iam.proto), and creating one
  that exists is 409 ALREADY_EXISTS "Service account <id> already exists within project projects/<p>."
  (GoogleCloudPlatform/java-docs-samples#3605);
- a policy carries an etag; `setIamPolicy` with a stale one is 409 ABORTED "There were concurrent
  policy changes. Please retry the whole read-modify-write with exponential backoff."
  (DataBiosphere/leonardo#737); without an etag the policy is overwritten, as IAM does;
- a `serviceAccount:` member of this project's domain must exist (400), and a Workload Identity
  member `serviceAccount:<pool>[ns/name]` needs the pool, which exists only once a GKE cluster of the
  project has Workload Identity: "Identity Pool does not exist (<pool>). ..."
  (terraform-google-modules/terraform-google-kubernetes-engine#916, jenkins-x/jx#7627).
Each project starts with an owner and GKE's service agent bound, so callers must keep others' bindings.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import re
from typing import TYPE_CHECKING

from ..core import ApiError
from . import gke, projects

if TYPE_CHECKING:
    from ..core import SandboxContext as Sandbox

SA_DOMAIN = "iam.gserviceaccount.com"
ACCOUNT_ID = re.compile(r"^[a-z](?:[-a-z0-9]{4,28}[a-z0-9])$")
WI_MEMBER = re.compile(r"^serviceAccount:(?P<pool>[^\[\]]+\.svc\.id\.goog)\[(?P<ns>[^/\]]+)/(?P<name>[^\]]+)\]$")
MEMBER_KINDS = ("user:", "group:", "domain:", "serviceAccount:", "deleted:", "principal:", "principalSet:",
                "allUsers", "allAuthenticatedUsers", "projectOwner:", "projectEditor:", "projectViewer:")
ABORTED = ("There were concurrent policy changes. Please retry the whole read-modify-write with exponential "
           "backoff.")


def state(sb: "Sandbox") -> dict:
    iam = sb.store.section("iam")
    if "accounts" not in iam:
        iam.update({"accounts": {}, "policies": {}, "seq": 0})
    return iam


def email_of(project: str, account_id: str) -> str:
    return f"{account_id}@{project}.{SA_DOMAIN}"


def default_compute_account(sb: "Sandbox", project: str) -> str:
    return f"{projects.project_number(sb, project)}-compute@developer.gserviceaccount.com"


def account_exists(sb: "Sandbox", email: str) -> bool:
    """A user-managed account in the state, or a project's default Compute Engine account."""
    if email in state(sb)["accounts"]:
        return True
    m = re.match(r"^(\d+)-compute@developer\.gserviceaccount\.com$", email)
    return m is not None and any(r["number"] == m.group(1) for r in projects.state(sb)["projects"].values())


def find_account(sb: "Sandbox", project: str, key: str) -> dict | None:
    """By email or unique id; project `-` finds it in any project, as IAM's wildcard does."""
    for rec in state(sb)["accounts"].values():
        if key in (rec["email"], rec["uniqueId"]) and project in ("-", rec["projectId"], rec["number"]):
            return rec
    return None


def list_accounts(sb: "Sandbox", project: str) -> list[dict]:
    project_id = projects.project_record(sb, project)["id"]
    return sorted((r for r in state(sb)["accounts"].values() if r["projectId"] == project_id), key=lambda r: r["email"])


def create_account(sb: "Sandbox", project: str, account_id: str, display_name: str = "",
                   description: str = "") -> dict:
    rec = projects.project_record(sb, project)
    if not ACCOUNT_ID.match(account_id or ""):
        raise ApiError(400, f"Invalid account ID {account_id!r}: it must be 6-30 characters long, and match the "
                            f"regular expression [a-z]([-a-z0-9]*[a-z0-9]) to comply with RFC1035.")
    email = email_of(rec["id"], account_id)
    if email in state(sb)["accounts"]:
        raise ApiError(409, f"Service account {account_id} already exists within project projects/{rec['id']}.",
                       status="ALREADY_EXISTS")
    unique = str(10 ** 20 + int(hashlib.sha256(email.encode()).hexdigest(), 16) % 10 ** 20)
    account = {"name": f"projects/{rec['id']}/serviceAccounts/{email}", "projectId": rec["id"], "number": rec["number"],
               "uniqueId": unique, "email": email, "displayName": display_name, "description": description,
               "etag": base64.b64encode(b"\x00" * 8).decode(), "oauth2ClientId": unique}
    state(sb)["accounts"][email] = account
    sb.store.mark()
    return account


# ---- policies ----------------------------------------------------------------------------------------
def project_resource(sb: "Sandbox", project: str) -> str:
    return f"projects/{projects.project_record(sb, project)['id']}"


def _initial(sb: "Sandbox", resource: str) -> dict:
    if resource.count("/") == 1:  # a project: its owner and GKE's service agent, as a real project has
        number = projects.project_number(sb, resource.split("/", 1)[1])
        return {"version": 1, "bindings": [
            {"role": "roles/container.serviceAgent",
             "members": [f"serviceAccount:service-{number}@container-engine-robot.iam.gserviceaccount.com"]},
            {"role": "roles/owner", "members": ["user:owner@example.com"]}]}
    return {"version": 1, "bindings": []}


def _etag(sb: "Sandbox") -> str:
    iam = state(sb)
    iam["seq"] += 1
    return base64.b64encode(b"BwY" + iam["seq"].to_bytes(5, "big")).decode()


def get_policy(sb: "Sandbox", resource: str) -> dict:
    policies = state(sb)["policies"]
    if resource not in policies:
        policies[resource] = {**_initial(sb, resource), "etag": _etag(sb)}
        sb.store.mark()
    return copy.deepcopy(policies[resource])


def concurrent_change(sb: "Sandbox", resource: str) -> None:
    """Simulation of another writer's read-modify-write landing first (the `concurrent-change` fault):
    a binding of its own is added, so the caller's etag is stale."""
    current = get_policy(sb, resource)
    n = state(sb)["seq"]
    current["bindings"].append({"role": "roles/viewer", "members": [f"user:concurrent-writer-{n}@example.com"]})
    set_policy(sb, resource, {k: v for k, v in current.items() if k != "etag"})


def set_policy(sb: "Sandbox", resource: str, policy: dict, fault: str | None = None) -> dict:
    if fault == "concurrent-change":
        concurrent_change(sb, resource)
    current = get_policy(sb, resource)
    if policy.get("etag") and policy["etag"] != current["etag"]:
        raise ApiError(409, ABORTED, status="ABORTED")
    # IAM keeps one binding per role and condition: members of two bindings of one role are merged.
    merged: dict[tuple[str, str], dict] = {}
    for b in policy.get("bindings") or []:
        role = b.get("role") or ""
        if not role.startswith(("roles/", "projects/", "organizations/")):
            raise ApiError(400, f"Role {role} is not supported for this resource.")
        key = (role, json.dumps(b.get("condition"), sort_keys=True))
        entry = merged.setdefault(key, {**{k: v for k, v in b.items() if k not in ("role", "members")},
                                        "role": role, "members": []})
        entry["members"] = sorted(set(entry["members"]) | set(b.get("members") or []))
    bindings = [b for b in merged.values() if b["members"]]
    for b in bindings:
        for member in b["members"]:
            _check_member(sb, member)
    version = 3 if any(b.get("condition") for b in bindings) else int(policy.get("version") or 1)
    stored = {"version": version, "etag": _etag(sb), "bindings": bindings}
    state(sb)["policies"][resource] = stored
    sb.store.mark()
    return copy.deepcopy(stored)


def _check_member(sb: "Sandbox", member: str) -> None:
    if not member.startswith(MEMBER_KINDS):
        raise ApiError(400, f"Invalid member: {member}. Members must be of the form <type>:<id>.")
    wi = WI_MEMBER.match(member)
    if wi:
        pool = wi.group("pool")
        pools = {(c.get("workloadIdentityConfig") or {}).get("workloadPool") for c in gke.state(sb)["clusters"].values()}
        if pool not in pools:
            raise ApiError(400, f"Identity Pool does not exist ({pool}). Please check that you specified a valid "
                                f"resource name as returned in the `name` attribute in the configuration API.")
        return
    # A user-managed account of a project (<id>@<project>.iam.gserviceaccount.com) must exist;
    # Google-managed ones (service agents of other domains) are not the sandbox's to check.
    m = re.match(rf"^serviceAccount:([^@]+)@([a-z][-a-z0-9]*)\.{re.escape(SA_DOMAIN)}$", member)
    if m and m.group(2) in projects.state(sb)["projects"] and not account_exists(sb, member.split(":", 1)[1]):
        raise ApiError(400, f"Service account {member.split(':', 1)[1]} does not exist.")


def has_binding(policy: dict, role: str, member: str) -> bool:
    return any(b.get("role") == role and member in (b.get("members") or []) for b in policy.get("bindings") or [])


def member_roles(sb: "Sandbox", resource: str, member: str) -> set[str]:
    return {b["role"] for b in get_policy(sb, resource).get("bindings") or [] if member in b.get("members", [])}
