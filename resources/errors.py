"""Errors from the outside world, told in one line: what failed and what to do (no deep tracebacks)."""

from __future__ import annotations

from .google import OperationFailed, ServiceUsageDisabled, gexc
from .credentials import TokenUnavailable
from .kube import KubeconfigMissing, KubeTargetMismatch, KubeUnreachable
from .sandbox_runtime import SandboxStartFailed


def describe(exc: BaseException) -> str | None:
    """A one-line description of a known permanent error, or None for a bug (let it surface)."""
    import requests
    from google.auth.exceptions import DefaultCredentialsError, RefreshError
    from kubernetes.client.exceptions import ApiException

    if isinstance(exc, DefaultCredentialsError):
        return ("no Google credentials: run `gcloud auth application-default login` (or set "
                "GOOGLE_APPLICATION_CREDENTIALS) on the host that runs gpuplat")
    if isinstance(exc, RefreshError):
        return f"Google credentials could not be refreshed: {exc} (log in again)"
    if isinstance(exc, requests.exceptions.ConnectionError):
        return f"cannot reach the Google API endpoint: {exc.__class__.__name__} (network, proxy or firewall)"
    if isinstance(exc, ServiceUsageDisabled):
        return (f"{exc}: enable the bootstrap APIs first: gcloud services enable serviceusage.googleapis.com "
                f"cloudresourcemanager.googleapis.com --project {exc.project}")
    if isinstance(exc, gexc.Forbidden) and exc.reason == "SERVICE_DISABLED":
        service = (exc.metadata or {}).get("service", "the API")
        project = (exc.metadata or {}).get("consumer", "").removeprefix("projects/")
        return (f"{service} is not enabled in project {project}: gcloud services enable {service} --project {project} "
                f"(apis_enabled enables the ones gpuplat needs; just enabled: Google needs a few minutes to propagate it)")
    if isinstance(exc, gexc.Forbidden) and "quota" in exc.message.lower():
        # GKE refuses a create over quota with 403 PERMISSION_DENIED: a quota to raise, not a role to grant.
        return (f"quota exceeded: {exc.message.split(': ', 1)[-1]} (request an increase in the console, IAM & Admin > "
                f"Quotas; approval can take hours)")
    if isinstance(exc, gexc.GoogleAPICallError) and exc.reason == "UREQ_PROJECT_BILLING_NOT_FOUND":
        project = (exc.metadata or {}).get("project", "")
        return (f"billing is not enabled for project {project}: link a billing account (gcloud billing projects link "
                f"<project> --billing-account <ACCOUNT_ID>) and materialize apis_enabled again")
    if isinstance(exc, gexc.Forbidden):
        return f"permission denied by Google: {exc.message} (check the credentials' IAM roles on the project)"
    if isinstance(exc, gexc.GoogleAPICallError):
        return f"Google API error {exc.code}: {exc.message}"
    if isinstance(exc, gexc.RetryError):
        return f"gave up retrying a transient Google error: {exc.cause}"
    if isinstance(exc, ApiException):
        return f"Kubernetes API error {exc.status} {exc.reason}: {(exc.body or '')[:300]}"
    if isinstance(exc, (OperationFailed, KubeconfigMissing, KubeUnreachable, KubeTargetMismatch, TokenUnavailable,
                        SandboxStartFailed, TimeoutError, LookupError)):
        return str(exc)
    return None
