"""IAM admin v1: service accounts and their IAM policies (REST for gcloud, gRPC for the Python client).

The REST face follows `google/iam/admin/v1/iam.proto`'s HTTP rules; the gRPC face (the Python
`IAMClient` has no REST transport) is the same methods transcoded onto these routes by
`wire/grpc.py` (`GRPC_METHODS`). Every call needs `iam.googleapis.com` enabled in the project
(403 SERVICE_DISABLED otherwise). The state and its rules are in `stores/iam.py`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from google.cloud import iam_admin_v1
from google.iam.v1 import iam_policy_pb2, policy_pb2

from ..core import ApiError
from ..stores import iam, projects
from ..wire.google import google_page
from ..wire.http import Request, Route

if TYPE_CHECKING:
    from ..core import SandboxContext as Sandbox

SERVICE = "iam.googleapis.com"
PROJECT = r"projects/(?P<project>[^/]+)"
ACCOUNT = PROJECT + r"/serviceAccounts/(?P<account>[^/:]+)"


def _account(sb: "Sandbox", req: Request) -> dict:
    project, key = req.match["project"], req.match["account"]
    if project != "-":
        projects.require_enabled(sb, project, SERVICE)
    rec = iam.find_account(sb, project, key)
    if rec is None:
        # IAM answers 403 rather than 404 for a wildcard name that does not exist (iam.proto).
        if project == "-":
            raise ApiError(403, "Permission 'iam.serviceAccounts.get' denied on resource (or it may not exist).")
        raise ApiError(404, "Unknown service account")
    return rec


def policy_body(req: Request) -> dict:
    """The `policy` of a setIamPolicy request (every API's is the same google.iam.v1 message)."""
    policy = (req.json() or {}).get("policy")
    if not isinstance(policy, dict):
        raise ApiError(400, "Invalid JSON payload: `policy` is required.")
    return policy


def requested_version(req: Request) -> int:
    """`options.requestedPolicyVersion` of a getIamPolicy request: in the body (POST) or the query (GET)."""
    body = (req.json() or {}) if req.method == "POST" and req.body else {}
    raw = ((body.get("options") or {}).get("requestedPolicyVersion") if isinstance(body, dict) else None) \
        or req.param("options.requestedPolicyVersion") or 0
    try:
        return int(raw)
    except (TypeError, ValueError):
        raise ApiError(400, f"Invalid requestedPolicyVersion {raw!r}: valid values are 0, 1 and 3.") from None


def update_mask(req: Request) -> str | None:
    """The `updateMask` of a setIamPolicy request (a FieldMask: comma-separated paths in JSON)."""
    mask = (req.json() or {}).get("updateMask")
    if isinstance(mask, dict):  # the gRPC transcoding may carry {"paths": [...]}
        mask = ",".join(mask.get("paths") or [])
    return mask or None


def concurrent_change(req: Request) -> str | None:
    """Take an injected `concurrent-change` fault (another writer lands first); others stay for the server."""
    if req.fault != "concurrent-change":
        return None
    req.fault = None
    return "concurrent-change"


def _public(rec: dict) -> dict:
    return iam._public_account(rec)


def list_accounts(sb: "Sandbox", req: Request):
    projects.require_enabled(sb, req.match["project"], SERVICE)
    page, token = google_page(req, [_public(r) for r in iam.list_accounts(sb, req.match["project"])], 100, 100)
    return {"accounts": page, **({"nextPageToken": token} if token else {})}


def get_account(sb: "Sandbox", req: Request):
    return _public(_account(sb, req))


def create_account(sb: "Sandbox", req: Request):
    projects.require_enabled(sb, req.match["project"], SERVICE)
    body = req.json() or {}
    sa = body.get("serviceAccount") or {}
    return _public(iam.create_account(sb, req.match["project"], body.get("accountId", ""), sa.get("displayName", ""),
                                      sa.get("description", "")))


def get_policy(sb: "Sandbox", req: Request):
    return iam.get_policy(sb, _account(sb, req)["name"], requested_version(req))


def set_policy(sb: "Sandbox", req: Request):
    return iam.set_policy(sb, _account(sb, req)["name"], policy_body(req), concurrent_change(req), update_mask(req))


ROUTES = [
    Route("GET", rf"/v1/{PROJECT}/serviceAccounts", list_accounts, "ListServiceAccounts"),
    Route("POST", rf"/v1/{PROJECT}/serviceAccounts", create_account, "CreateServiceAccount", mutating=True),
    Route("GET", rf"/v1/{ACCOUNT}", get_account, "GetServiceAccount"),
    Route("POST", rf"/v1/{ACCOUNT}:getIamPolicy", get_policy, "GetIamPolicy"),
    Route("POST", rf"/v1/{ACCOUNT}:setIamPolicy", set_policy, "SetIamPolicy", mutating=True),
]

# gRPC method -> (request type, response type, HTTP method, path from the request, body field or "*").
# The HTTP rules are iam.proto's own (google.api.http annotations of google.iam.admin.v1.IAM).
GRPC_SERVICE = "google.iam.admin.v1.IAM"
GRPC_METHODS = {
    "ListServiceAccounts": (iam_admin_v1.ListServiceAccountsRequest, iam_admin_v1.ListServiceAccountsResponse,
                            "GET", lambda r: f"/v1/{r['name']}/serviceAccounts", None),
    "GetServiceAccount": (iam_admin_v1.GetServiceAccountRequest, iam_admin_v1.ServiceAccount,
                          "GET", lambda r: f"/v1/{r['name']}", None),
    "CreateServiceAccount": (iam_admin_v1.CreateServiceAccountRequest, iam_admin_v1.ServiceAccount,
                             "POST", lambda r: f"/v1/{r['name']}/serviceAccounts", "*"),
    "GetIamPolicy": (iam_policy_pb2.GetIamPolicyRequest, policy_pb2.Policy,
                     "POST", lambda r: f"/v1/{r['resource']}:getIamPolicy", "*"),
    "SetIamPolicy": (iam_policy_pb2.SetIamPolicyRequest, policy_pb2.Policy,
                     "POST", lambda r: f"/v1/{r['resource']}:setIamPolicy", "*"),
}
