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
