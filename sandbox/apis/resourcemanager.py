"""Cloud Resource Manager: a project and its IAM policy (v3 for the Python client, v1 for gcloud).

`getIamPolicy` / `setIamPolicy` on `projects/<id or number>` share the policies of `stores/iam.py`
(etags, the 409 ABORTED of a stale read-modify-write, member checks). Every call needs
`cloudresourcemanager.googleapis.com` enabled (a new project has it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from google.cloud import resourcemanager_v3

from ..stores import iam, projects
from ..wire.google import emit_google
from ..wire.http import Request, Route
from .iam import concurrent_change, policy_body, requested_version, update_mask

if TYPE_CHECKING:
    from ..core import SandboxContext as Sandbox

SERVICE = "cloudresourcemanager.googleapis.com"
PROJECT = r"projects/(?P<project>[^/:]+)"


def _project(sb: "Sandbox", req: Request) -> dict:
    return projects.require_enabled(sb, req.match["project"], SERVICE)


def get_project_v3(sb: "Sandbox", req: Request):
    rec = _project(sb, req)
    return emit_google(req, resourcemanager_v3.Project, {
        "name": f"projects/{rec['number']}", "projectId": rec["id"], "displayName": rec["id"], "state": "ACTIVE",
        "parent": "organizations/0"})


def get_project_v1(sb: "Sandbox", req: Request):
    rec = _project(sb, req)
    return {"projectNumber": rec["number"], "projectId": rec["id"], "name": rec["id"], "lifecycleState": "ACTIVE"}


def get_policy(sb: "Sandbox", req: Request):
    rec = _project(sb, req)
    return iam.get_policy(sb, f"projects/{rec['id']}", requested_version(req))


def set_policy(sb: "Sandbox", req: Request):
    rec = _project(sb, req)
    return iam.set_policy(sb, f"projects/{rec['id']}", policy_body(req), concurrent_change(req), update_mask(req))


ROUTES = [
    Route("GET", rf"/v3/{PROJECT}", get_project_v3, "GetProject"),
    Route("POST", rf"/v3/{PROJECT}:getIamPolicy", get_policy, "GetIamPolicy"),
    Route("POST", rf"/v3/{PROJECT}:setIamPolicy", set_policy, "SetIamPolicy", mutating=True),
    Route("GET", rf"/v1/{PROJECT}", get_project_v1, "GetProject"),
    Route("POST", rf"/v1/{PROJECT}:getIamPolicy", get_policy, "GetIamPolicy"),
    Route("POST", rf"/v1/{PROJECT}:setIamPolicy", set_policy, "SetIamPolicy", mutating=True),
]
