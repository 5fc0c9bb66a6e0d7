"""Projects: their numbers and enabled services (the state behind Service Usage and every API's 403).

Simulation: a project is a record in the sandbox state (`serviceusage` section) holding its number
and its set of enabled services. Projects spring into existence on first use with
`serviceusage.googleapis.com` and `cloudresourcemanager.googleapis.com` enabled (as a new GCP project
has them).
"""

from __future__ import annotations

import hashlib
import re
from typing import TYPE_CHECKING

from ..wire.google import service_disabled_error

if TYPE_CHECKING:
    from ..core import SandboxContext as Sandbox


SERVICE_USAGE = "serviceusage.googleapis.com"

DEFAULT_ENABLED = (SERVICE_USAGE, "cloudresourcemanager.googleapis.com")

# Titles of the services a GPU platform talks about; any other `*.googleapis.com` name is accepted
# with a title made from its name.
TITLES = {
    "artifactregistry.googleapis.com": "Artifact Registry API",
    "autoscaling.googleapis.com": "Cloud Autoscaling API",
    "certificatemanager.googleapis.com": "Certificate Manager API",
    "cloudbilling.googleapis.com": "Cloud Billing API",
    "cloudbuild.googleapis.com": "Cloud Build API",
    "cloudresourcemanager.googleapis.com": "Cloud Resource Manager API",
    "compute.googleapis.com": "Compute Engine API",
    "container.googleapis.com": "Kubernetes Engine API",
    "containerfilesystem.googleapis.com": "Container File System API",
    "dns.googleapis.com": "Cloud DNS API",
    "iam.googleapis.com": "Identity and Access Management (IAM) API",
    "iamcredentials.googleapis.com": "IAM Service Account Credentials API",
    "logging.googleapis.com": "Cloud Logging API",
    "monitoring.googleapis.com": "Cloud Monitoring API",
    "oslogin.googleapis.com": "Cloud OS Login API",
    "secretmanager.googleapis.com": "Secret Manager API",
    "serviceusage.googleapis.com": "Service Usage API",
    "storage.googleapis.com": "Cloud Storage API",
    "sts.googleapis.com": "Security Token Service API",
}

# Illustrative subset of what Google enables alongside a service.
DEPENDENCIES = {
    "container.googleapis.com": ("compute.googleapis.com", "iam.googleapis.com", "iamcredentials.googleapis.com",
                                 "oslogin.googleapis.com", "artifactregistry.googleapis.com",
                                 "autoscaling.googleapis.com", "containerfilesystem.googleapis.com"),
    "compute.googleapis.com": ("oslogin.googleapis.com",),
}

SERVICE_RE = re.compile(r"^[a-z0-9][a-z0-9.-]*\.googleapis\.com$")


def state(sb: "Sandbox") -> dict:
    su = sb.store.section("serviceusage")
    if "projects" not in su:
        su.update({"projects": {}, "operations": {}, "pending": []})
    return su


def derived_number(project_id: str) -> str:
    return str(100000000000 + int(hashlib.sha256(project_id.encode()).hexdigest(), 16) % 900000000000)


def project_record(sb: "Sandbox", project: str) -> dict:
    """The sandbox project behind a project id or number (`my-proj`, `123`, `projects/my-proj`).

    Created on first use: number derived from the id (stable across restarts), the default services
    enabled. Returns the stored dict `{"id", "number", "enabled": [...]}`.
    """
    project = project.removeprefix("projects/")
    projects = state(sb)["projects"]
    rec = projects.get(project)
    if rec is not None:
        return rec
    if project.isdigit():
        for r in projects.values():
            if r["number"] == project:
                return r
    rec = {"id": project, "number": project if project.isdigit() else derived_number(project),
           "enabled": sorted(DEFAULT_ENABLED)}
    projects[project] = rec
    sb.store.mark()
    return rec


def project_number(sb: "Sandbox", project: str) -> str:
    """The project number Google puts in resource names (Service Usage, Secret Manager) for an id or number."""
    return project_record(sb, project)["number"]


def is_enabled(sb: "Sandbox", project: str, service: str) -> bool:
    """Whether `service` (e.g. `container.googleapis.com`) is enabled in the project."""
    return service in project_record(sb, project)["enabled"]


# Services that need a billing account to be enabled (one real refusal lists compute, container,
# secretmanager, artifactregistry, containerregistry and dns; kyegomez/zeta#71 shows compute's).
PAID_SERVICES = frozenset({"compute.googleapis.com", "container.googleapis.com", "secretmanager.googleapis.com",
                           "artifactregistry.googleapis.com", "containerregistry.googleapis.com", "dns.googleapis.com"})


def require_enabled(sb: "Sandbox", project: str, service: str) -> dict:
    """The project's record, or Google's 403 SERVICE_DISABLED when `service` is not enabled in it, or was
    enabled less than the project's `propagation` seconds ago ("If you enabled this API recently, wait a
    few minutes for the action to propagate to our systems and retry")."""
    rec = project_record(sb, project)
    since = (rec.get("enabledAt") or {}).get(service)
    recent = since is not None and sb.clock.now() - since < float(rec.get("propagation") or 0)
    if service not in rec["enabled"] or recent:
        # The consumer is named by its number (error_reason.proto's example: "consumer": "projects/123"),
        # as real answers name it (terraform-google-modules/cloud-foundation-training#20).
        raise service_disabled_error(rec["number"], service, title(service))
    return rec


def billing_refusal(rec: dict, services: list[str]):
    """Service Usage's refusal to enable paid services in a project without billing (400
    FAILED_PRECONDITION, ErrorInfo UREQ_PROJECT_BILLING_NOT_FOUND; GoogleCloudPlatform/deploystack#52),
    as an ApiError, or None."""
    from ..core import ApiError

    paid = [s for s in services if s in PAID_SERVICES]
    if rec.get("billing", True) or not paid:
        return None
    number, joined = rec["number"], ",".join(paid)
    return ApiError(400, f"Billing account for project '{number}' is not found. Billing must be enabled for "
                         f"activation of service(s) '{joined}' to proceed.", status="FAILED_PRECONDITION", details=[
        {"@type": "type.googleapis.com/google.rpc.PreconditionFailure", "violations": [
            {"type": "googleapis.com/billing-enabled", "subject": f"?error_code=390001&project={number}&services={joined}",
             "description": f"Billing must be enabled for activation of service(s) '{joined}' to proceed."}]},
        {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "UREQ_PROJECT_BILLING_NOT_FOUND",
         "domain": "serviceusage.googleapis.com/billing-enabled", "metadata": {"project": number, "services": joined}}])


def title(service: str) -> str:
    return TITLES.get(service) or service.split(".")[0].replace("-", " ").title() + " API"
