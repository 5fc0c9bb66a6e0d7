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

Over time, as real IAM behaves (each off by default, set per project with `POST /sandbox/projects`):
- a service account created moments ago does not exist yet for what uses it, for the project's
  `iam_propagation` seconds on the sandbox's clock: a binding naming it, its own `setIamPolicy` and a
  GKE node pool running as it are refused 400 INVALID_ARGUMENT "Service account <email> does not
  exist." (https://cloud.google.com/iam/docs/service-accounts-create: "you might need to wait for 60
  seconds or more before you use the service account"; Terraform retries exactly this, its
  `IamServiceAccountNotFound` predicate);
- policy versions and conditions as google/iam/v1/policy.proto documents them: a policy holding a
  conditional binding is version 3 and is read as such only with `requestedPolicyVersion: 3`; a lower
  request gets version 1 with each conditional binding's role renamed `<role>_withcond_<hash>` and no
  condition (https://cloud.google.com/iam/docs/troubleshooting-withcond); a write that sets conditions
  must say version 3; a version-1 write over a version-3 policy is refused when it carries the etag
  ("Specified policy version (1) cannot be less than the existing policy version (3)",
  hashicorp/vault-plugin-secrets-gcp#88) and, without the etag, overwrites it and loses every condition
  (policy.proto's "Important" note); `auditConfigs` change only when the update mask names them (the
  default mask is "bindings, etag", google/iam/v1/iam_policy.proto).
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


def propagated(sb: "Sandbox", email: str) -> bool:
    """Whether an account that exists is known everywhere yet (its project's `iam_propagation` has passed)."""
    rec = state(sb)["accounts"].get(email)
    if rec is None or "createdAt" not in rec:
        return True
    wait = float(projects.project_record(sb, rec["projectId"]).get("iamPropagation") or 0)
    return sb.clock.now() - rec["createdAt"] >= wait


def require_usable(sb: "Sandbox", email: str) -> None:
    """IAM's answer for an account not yet propagated: it "does not exist" for whatever uses it."""
    if not propagated(sb, email):
        raise ApiError(400, f"Service account {email} does not exist.", status="INVALID_ARGUMENT")


def _public_account(rec: dict) -> dict:
    return {k: v for k, v in rec.items() if k not in ("number", "createdAt")}


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
               "etag": base64.b64encode(b"\x00" * 8).decode(), "oauth2ClientId": unique, "createdAt": sb.clock.now()}
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


def _stored(sb: "Sandbox", resource: str) -> dict:
    policies = state(sb)["policies"]
    if resource not in policies:
        policies[resource] = {**_initial(sb, resource), "etag": _etag(sb)}
        sb.store.mark()
    return policies[resource]


def _conditional(policy: dict) -> bool:
    return any(b.get("condition") for b in policy.get("bindings") or [])


def get_policy(sb: "Sandbox", resource: str, requested_version: int = 1) -> dict:
    """The policy as IAM answers a read asking `requested_version`: a version-3 policy read with less is its
    version-1 view (conditional bindings renamed `<role>_withcond_<hash>`, without their condition)."""
    stored = copy.deepcopy(_stored(sb, resource))
    if not _conditional(stored) or requested_version >= 3:
        return stored
    view = []
    for b in stored["bindings"]:
        if b.get("condition"):
            digest = hashlib.sha256(json.dumps(b["condition"], sort_keys=True).encode()).hexdigest()[:20]
            b = {"role": f"{b['role']}_withcond_{digest}", "members": b["members"]}
        view.append(b)
    return {**stored, "version": 1, "bindings": view}


def concurrent_change(sb: "Sandbox", resource: str) -> None:
    """Simulation of another writer's read-modify-write landing first (the `concurrent-change` fault):
    a binding of its own is added, so the caller's etag is stale."""
    current = get_policy(sb, resource, 3)
    n = state(sb)["seq"]
    current["bindings"].append({"role": "roles/viewer", "members": [f"user:concurrent-writer-{n}@example.com"]})
    set_policy(sb, resource, {k: v for k, v in current.items() if k != "etag"}, update_mask="bindings,etag")


def set_policy(sb: "Sandbox", resource: str, policy: dict, fault: str | None = None,
               update_mask: str | None = None) -> dict:
    if fault == "concurrent-change":
        concurrent_change(sb, resource)
    current = copy.deepcopy(_stored(sb, resource))
    if policy.get("etag") and policy["etag"] != current["etag"]:
        raise ApiError(409, ABORTED, status="ABORTED")
    version = int(policy.get("version") or 1)
    if _conditional(policy) and version < 3:
        raise ApiError(400, f"Invalid policy version {version}: a policy with conditional role bindings must "
                            f"specify version 3.", status="INVALID_ARGUMENT")
    if _conditional(current) and version < 3 and policy.get("etag"):
        raise ApiError(400, f"Specified policy version ({version}) cannot be less than the existing policy "
                            f"version (3). For more information, please refer to "
                            f"https://cloud.google.com/iam/docs/policies#versions.", status="INVALID_ARGUMENT")
    if account_resource(resource):
        require_usable(sb, account_resource(resource))
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
    version = 3 if any(b.get("condition") for b in bindings) else 1
    fields = {f.strip() for f in (update_mask or "bindings,etag").split(",")}
    audit = policy.get("auditConfigs") if "auditConfigs" in fields else current.get("auditConfigs")
    stored = {"version": version, "etag": _etag(sb), "bindings": bindings, **({"auditConfigs": audit} if audit else {})}
    state(sb)["policies"][resource] = stored
    sb.store.mark()
    return copy.deepcopy(stored)


def account_resource(resource: str) -> str:
    """The email of a `projects/<p>/serviceAccounts/<email>` resource ("" for anything else)."""
    parts = resource.split("/serviceAccounts/", 1)
    return parts[1] if len(parts) == 2 else ""


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
    if m and m.group(2) in projects.state(sb)["projects"]:
        email = member.split(":", 1)[1]
        if not account_exists(sb, email):
            raise ApiError(400, f"Service account {email} does not exist.")
        require_usable(sb, email)


def has_binding(policy: dict, role: str, member: str) -> bool:
    return any(b.get("role") == role and member in (b.get("members") or []) for b in policy.get("bindings") or [])


def member_roles(sb: "Sandbox", resource: str, member: str) -> set[str]:
    """The roles `member` holds unconditionally on `resource` (what the simulations grant by)."""
    # Read in place: a copy of a project's policy (one member per cluster's node account) per cluster
    # made every pass over a fleet quadratic.
    return {b["role"] for b in _stored(sb, resource).get("bindings") or []
            if member in b.get("members", []) and not b.get("condition")}
