"""gpuplat's errors: one hierarchy, each class carrying the user's one line and the remedy.

`resources/` raises these from what the outside world says in structure (an HTTP status, Google's
canonical `error.status` and `ErrorInfo` reason and metadata, a GKE operation's StatusCondition code,
Kubernetes' `Status.reason`), so nothing above `resources/` ever reads an error's text: assets, checks
and sensors choose their remedy by the class. `str(exc)` is the one line; `exc.remedy` what to do.

A `GpuplatError` is a known failure of the outside world or of the input. Anything else that escapes
a step is a bug, and surfaces with its traceback.

This module is the bottom of the product: it imports nothing of gpuplat and no client library.
"""

from __future__ import annotations


class GpuplatError(Exception):
    """A failure gpuplat can explain in one line, with what to do about it."""

    remedy: str = ""

    def __init__(self, message: str, remedy: str = ""):
        super().__init__(message)
        self.message = message
        if remedy:
            self.remedy = remedy

    def line(self) -> str:
        """The message and its remedy, as a person reads it in a failed step or check."""
        return f"{self.message} ({self.remedy})" if self.remedy and self.remedy not in self.message else self.message


# ---- Google --------------------------------------------------------------------------------------------
class GoogleError(GpuplatError):
    """An error a Google API answered with: HTTP `code`, canonical `status` (FAILED_PRECONDITION, ...),
    the `ErrorInfo` `reason` and `metadata` when the answer carried one."""

    def __init__(self, message: str, remedy: str = "", code: int = 0, status: str = "", reason: str = "",
                 metadata: dict | None = None):
        super().__init__(message, remedy)
        self.code, self.status, self.reason = code, status, reason
        self.metadata = dict(metadata or {})


class ServiceDisabled(GoogleError):
    """403 SERVICE_DISABLED: the API is not enabled in the consumer project (ErrorInfo metadata `service`
    and `consumer`, which names the project by id or by number)."""

    @property
    def service(self) -> str:
        return self.metadata.get("service", "")

    @property
    def consumer(self) -> str:
        return self.metadata.get("consumer", "").removeprefix("projects/")


class ServiceUsageDisabled(ServiceDisabled):
    """Service Usage itself is disabled: gpuplat cannot enable anything until a person enables it."""


class BillingDisabled(GoogleError):
    """UREQ_PROJECT_BILLING_NOT_FOUND: a paid API cannot be enabled without a billing account."""


class QuotaExceeded(GoogleError):
    """A create refused because a Compute quota is too small."""


class PermissionDenied(GoogleError):
    """403 for the caller's identity: a role is missing."""


class AccountNotPropagated(GoogleError):
    """A service account created moments ago is not yet known everywhere (IAM is eventually consistent)."""


class ClusterBusy(GoogleError):
    """GKE refuses a second operation on a cluster while one runs (FAILED_PRECONDITION, 400)."""


class SecretVersionUnreadable(GoogleError):
    """A secret's `latest` version (the newest, whatever its state) is DISABLED or DESTROYED."""


class GoogleUnreachable(GpuplatError):
    """The Google API endpoint did not answer (network, proxy, firewall) or kept answering transient errors."""


class CredentialsMissing(GpuplatError):
    """No Google credentials where gpuplat runs, or they could not be refreshed."""


class OperationFailed(GpuplatError):
    """A long-running operation ended with an error. `code` is GKE's StatusCondition code when it gave one
    (GCE_STOCKOUT, GCE_QUOTA_EXCEEDED, ...)."""

    def __init__(self, message: str, remedy: str = "", code: str = ""):
        super().__init__(message, remedy)
        self.code = code


class Stockout(OperationFailed):
    """The zone had no capacity for the machine or accelerator (GCE_STOCKOUT)."""


class OperationQuota(OperationFailed):
    """The operation ran out of quota (GCE_QUOTA_EXCEEDED)."""


class OperationTimeout(OperationFailed):
    """The operation was still running when its bounded wait ended."""


class PolicyRace(GpuplatError):
    """Every read-modify-write of an IAM policy met a newer policy."""


# ---- Kubernetes ----------------------------------------------------------------------------------------
class KubeError(GpuplatError):
    """Anything about reaching or using an environment's Kubernetes API."""


class PrerequisiteMissing(KubeError):
    """The cluster this step needs is not there yet (no kubeconfig, a GKE cluster not running): not drift,
    not a failure of this piece: bring the cluster up first."""


class KubeconfigMissing(PrerequisiteMissing):
    pass


class ClusterNotRunning(PrerequisiteMissing):
    pass


class KubeTargetMismatch(KubeError):
    """The kubeconfig now reaches another cluster than the one this environment recorded."""


class KubeUnreachable(KubeError):
    pass


class TokenUnavailable(KubeError):
    """Google credentials could not produce a token for GKE's Kubernetes API."""


class KindNotServed(KubeError):
    """The cluster does not serve a kind (its CRD is absent)."""


class KubeApiError(KubeError):
    """The Kubernetes API refused a call: HTTP `status` and `Status.reason` (NotFound, Conflict, ...)."""

    def __init__(self, message: str, remedy: str = "", status: int = 0, reason: str = ""):
        super().__init__(message, remedy)
        self.status, self.reason = status, reason


# ---- the sandbox ---------------------------------------------------------------------------------------
class SandboxStartFailed(GpuplatError):
    """The sandbox process exited or did not answer: the one line it printed says why."""


def describe(exc: BaseException) -> str | None:
    """The one line of a known failure (message and remedy), or None for a bug: let that surface."""
    return exc.line() if isinstance(exc, GpuplatError) else None
