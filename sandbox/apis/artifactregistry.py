"""Artifact Registry v1: repositories (created as long-running operations) and their IAM policies.

Simulation: repositories are records in the sandbox state (`artifactregistry` section); nothing is
stored in them. `CreateRepository` answers an operation that is done at its first poll (or one
simulated second later); a repository that exists is 409 ALREADY_EXISTS; ids follow the API's rule
(a lower-case letter, then lower-case letters, digits and hyphens, at most 63). Every call needs
`artifactregistry.googleapis.com` enabled. Repository IAM shares `stores/iam.py`.
"""

from __future__ import annotations

import re
import uuid
from typing import TYPE_CHECKING

from google.cloud import artifactregistry_v1

from ..core import ApiError
from ..stores import iam, projects
from ..wire.google import emit_google, google_page
from ..wire.http import Request, Route
from .iam import concurrent_change, policy_body, requested_version, update_mask

if TYPE_CHECKING:
    from ..core import SandboxContext as Sandbox

SERVICE = "artifactregistry.googleapis.com"
LOCATION = r"projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)"
REPO = LOCATION + r"/repositories/(?P<repo>[^/:]+)"
REPO_ID = re.compile(r"^[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?$")
REGION = re.compile(r"^[a-z]+-[a-z]+[0-9]+$")
TYPE = "type.googleapis.com/google.devtools.artifactregistry.v1."


def _state(sb: "Sandbox") -> dict:
    ar = sb.store.section("artifactregistry")
    if "repositories" not in ar:
        ar.update({"repositories": {}, "operations": {}})
    return ar


def _location(sb: "Sandbox", req: Request) -> str:
    rec = projects.require_enabled(sb, req.match["project"], SERVICE)
    location = req.match["location"]
    if not REGION.match(location) and location not in ("us", "europe", "asia"):
        raise ApiError(400, f"Invalid location {location!r}: Artifact Registry repositories live in a region "
                            f"(us-central1) or a multi-region (us, europe, asia).")
    return f"projects/{rec['id']}/locations/{location}"


def _repo(sb: "Sandbox", req: Request) -> dict:
    name = f"{_location(sb, req)}/repositories/{req.match['repo']}"
    repo = _state(sb)["repositories"].get(name)
    if repo is None:
        raise ApiError(404, "Requested entity was not found.")
    return repo


def create_repository(sb: "Sandbox", req: Request):
    parent = _location(sb, req)
    repo_id = req.param("repositoryId") or ""
    if not REPO_ID.match(repo_id):
        raise ApiError(400, f"Invalid repository ID {repo_id!r}: a lower-case letter, then lower-case letters, "
                            f"digits and hyphens, at most 63 characters.")
    name = f"{parent}/repositories/{repo_id}"
    repos = _state(sb)["repositories"]
    if name in repos:
        raise ApiError(409, "the repository already exists", status="ALREADY_EXISTS")
    body = req.json() or {}
    fmt = body.get("format")
    fmt = artifactregistry_v1.Repository.Format(fmt).name if isinstance(fmt, int) else (fmt or "FORMAT_UNSPECIFIED")
    if fmt == "FORMAT_UNSPECIFIED":
        raise ApiError(400, "Repository format is required.")
    now = sb.clock.rfc3339()
    repos[name] = {"name": name, "format": fmt, "description": body.get("description", ""),
                   "labels": body.get("labels") or {}, "mode": "STANDARD_REPOSITORY", "createTime": now,
                   "updateTime": now, "sizeBytes": "0",
                   "registryUri": f"{req.match['location']}-docker.pkg.dev/{req.match['project']}/{repo_id}"}
    op = {"name": f"{parent}/operations/{uuid.uuid4()}", "repo": name, "start": sb.clock.now(), "polled": False}
    _state(sb)["operations"][op["name"]] = op
    sb.store.mark()
    return _operation(op, repos[name], done=False)


def _operation(op: dict, repo: dict, done: bool) -> dict:
    out = {"name": op["name"], "metadata": {"@type": TYPE + "OperationMetadata"}, "done": done}
    if done:
        out["response"] = {"@type": TYPE + "Repository", **repo}
    return out


def get_operation(sb: "Sandbox", req: Request):
    name = f"{_location(sb, req)}/operations/{req.match['op']}"
    op = _state(sb)["operations"].get(name)
    if op is None:
        raise ApiError(404, "Requested entity was not found.")
    done = op["polled"] or sb.clock.now() - op["start"] >= 1.0
    if not op["polled"]:
        op["polled"] = True
        sb.store.mark()
    return _operation(op, _state(sb)["repositories"][op["repo"]], done)


def get_repository(sb: "Sandbox", req: Request):
    return emit_google(req, artifactregistry_v1.Repository, _repo(sb, req))


def list_repositories(sb: "Sandbox", req: Request):
    parent = _location(sb, req)
    repos = [r for n, r in sorted(_state(sb)["repositories"].items()) if n.startswith(parent + "/")]
    page, token = google_page(req, repos, 1000, 1000)
    return emit_google(req, artifactregistry_v1.ListRepositoriesResponse,
                       {"repositories": page, **({"nextPageToken": token} if token else {})})


def list_locations(sb: "Sandbox", req: Request):
    rec = projects.require_enabled(sb, req.match["project"], SERVICE)
    regions = ("us-central1", "us-east1", "us-west1", "europe-west1", "europe-west4", "asia-east1")
    return {"locations": [{"name": f"projects/{rec['id']}/locations/{r}", "locationId": r} for r in regions]}


def get_policy(sb: "Sandbox", req: Request):
    return iam.get_policy(sb, _repo(sb, req)["name"], requested_version(req))


def set_policy(sb: "Sandbox", req: Request):
    return iam.set_policy(sb, _repo(sb, req)["name"], policy_body(req), concurrent_change(req), update_mask(req))


ROUTES = [
    Route("POST", rf"/v1/{LOCATION}/repositories", create_repository, "CreateRepository", mutating=True),
    Route("GET", rf"/v1/{LOCATION}/repositories", list_repositories, "ListRepositories"),
    Route("GET", rf"/v1/{REPO}", get_repository, "GetRepository"),
    Route("GET", rf"/v1/{REPO}:getIamPolicy", get_policy, "GetIamPolicy"),
    Route("POST", rf"/v1/{REPO}:getIamPolicy", get_policy, "GetIamPolicy"),
    Route("POST", rf"/v1/{REPO}:setIamPolicy", set_policy, "SetIamPolicy", mutating=True),
    Route("GET", rf"/v1/{LOCATION}/operations/(?P<op>[^/]+)", get_operation, "GetOperation"),
    Route("GET", r"/v1/projects/(?P<project>[^/]+)/locations", list_locations, "ListLocations"),
    Route("GET", r"/v1beta2/projects/(?P<project>[^/]+)/locations", list_locations, "ListLocations"),
]
