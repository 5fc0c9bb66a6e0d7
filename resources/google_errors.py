"""Google's errors, read from their structure and turned into gpuplat's (resources/errors.py).

What a Google answer says in structure: the HTTP code, the canonical `error.status`
(FAILED_PRECONDITION, ...), and a `google.rpc.ErrorInfo` with a `reason` and `metadata`
(https://cloud.google.com/apis/design/errors#error_info). `classify` turns a client library
exception into the gpuplat class that names the cause; `translated` does it at the boundary of each
`Google` and `Iam` method, so no library exception and no library traceback leaves `resources/`.

Two real refusals carry no structured detail, only words, and are read here (and only here) by them:
GKE's "Insufficient regional quota ..." (403) and IAM's "Service account ... does not exist" (400),
which Terraform's Google provider matches the same way (`IamServiceAccountNotFound` in
google/transport/error_retry_predicates.go).
"""

from __future__ import annotations

import functools
import re
from typing import Callable

from .errors import (
    AccountNotPropagated,
    BillingDisabled,
    ClusterBusy,
    CredentialsMissing,
    GoogleError,
    GoogleUnreachable,
    PermissionDenied,
    QuotaExceeded,
    SecretVersionUnreadable,
    ServiceDisabled,
    ServiceUsageDisabled,
)


class _Exceptions:
    """`google.api_core.exceptions`, imported on first use: it pulls in gRPC, which every Dagster
    process that loads the code location would otherwise pay for (benchmarks/import_time.py)."""

    def __getattr__(self, name: str):
        from google.api_core import exceptions
        return getattr(exceptions, name)


gexc = _Exceptions()

_QUOTA = re.compile(r"\bquota\b", re.IGNORECASE)
_ACCOUNT_MISSING = re.compile(r"Service account .* does not exist", re.IGNORECASE | re.DOTALL)
SERVICE_USAGE = "serviceusage.googleapis.com"


def canonical_status(exc: BaseException) -> str:
    """The canonical code's name (FAILED_PRECONDITION, ...): a REST answer's `error.status` (its class
    only says the HTTP code: 400 is FAILED_PRECONDITION as often as INVALID_ARGUMENT), else gRPC's."""
    response = getattr(exc, "response", None)
    if response is not None and hasattr(response, "json"):
        try:
            status = (response.json().get("error") or {}).get("status")
        except (ValueError, AttributeError, TypeError):
            status = None
        if status:
            return str(status)
    code = getattr(exc, "grpc_status_code", None)
    return getattr(code, "name", "") or ""


def _message(exc) -> str:
    return getattr(exc, "message", None) or str(exc)


def classify(exc: BaseException, api: str = "") -> type[GoogleError] | None:
    """The gpuplat class for a client library's exception (None: not a Google API answer).

    `api` names the API that was called ("container" for GKE): GKE's FAILED_PRECONDITION means a busy
    cluster, Secret Manager's a version that cannot be read.
    """
    if not isinstance(exc, gexc.GoogleAPICallError):
        return None
    reason = getattr(exc, "reason", None) or ""
    status = canonical_status(exc)
    code = getattr(exc, "code", 0) or 0
    if reason == "SERVICE_DISABLED":
        service = (getattr(exc, "metadata", None) or {}).get("service", "")
        return ServiceUsageDisabled if service == SERVICE_USAGE else ServiceDisabled
    if reason == "UREQ_PROJECT_BILLING_NOT_FOUND":
        return BillingDisabled
    if status == "FAILED_PRECONDITION" and api == "container":
        return ClusterBusy
    if status == "FAILED_PRECONDITION" and api == "secretmanager":
        return SecretVersionUnreadable
    if code == 400 and _ACCOUNT_MISSING.search(_message(exc)):
        return AccountNotPropagated
    if code == 403 and _QUOTA.search(_message(exc)):
        return QuotaExceeded
    if code == 403:
        return PermissionDenied
    return GoogleError


def is_server_side_transient(exc: BaseException) -> bool:
    """Answers worth asking again as they are: 5xx, 429, and a request whose answer never came."""
    import requests

    if isinstance(exc, (gexc.ServiceUnavailable, gexc.TooManyRequests, gexc.InternalServerError,
                        gexc.GatewayTimeout, gexc.BadGateway)):
        return True
    return isinstance(exc, (requests.exceptions.Timeout, requests.exceptions.ConnectionError))


def is_transient(exc: BaseException, api: str = "") -> bool:
    """Retried with backoff, for a bounded time: server-side hiccups, a cluster busy with another
    operation, a service account not yet propagated."""
    return is_server_side_transient(exc) or classify(exc, api) in (ClusterBusy, AccountNotPropagated)


def to_gpuplat(exc: BaseException, api: str = "", project: str = "") -> BaseException:
    """The gpuplat error for a Google client exception; anything unknown comes back as it was."""
    import requests
    from google.auth.exceptions import DefaultCredentialsError, RefreshError

    if isinstance(exc, DefaultCredentialsError):
        return CredentialsMissing("no Google credentials", "run `gcloud auth application-default login` (or set "
                                  "GOOGLE_APPLICATION_CREDENTIALS) on the host that runs gpuplat")
    if isinstance(exc, RefreshError):
        return CredentialsMissing(f"Google credentials could not be refreshed: {exc}", "log in again")
    if isinstance(exc, (requests.exceptions.ConnectionError, requests.exceptions.Timeout)):
        return GoogleUnreachable(f"cannot reach the Google API endpoint: {type(exc).__name__}",
                                 "check the network, proxy or firewall between this host and Google")
    if isinstance(exc, gexc.RetryError):
        cause = getattr(exc, "cause", None)
        inner = to_gpuplat(cause, api, project) if cause is not None else None
        line = inner.line() if isinstance(inner, GoogleError | GoogleUnreachable) else str(cause)
        return GoogleUnreachable(f"gave up retrying a transient Google error: {line}",
                                 "try again later; if it persists, check the service's status page")
    cls = classify(exc, api)
    if cls is None:
        return exc
    meta = dict(getattr(exc, "metadata", None) or {})
    kwargs = dict(code=getattr(exc, "code", 0) or 0, status=canonical_status(exc),
                  reason=getattr(exc, "reason", None) or "", metadata=meta)
    message = _message(exc)
    if issubclass(cls, ServiceDisabled):
        service = meta.get("service", "the API")
        consumer = meta.get("consumer", "").removeprefix("projects/") or project
        where = project or consumer
        if cls is ServiceUsageDisabled:
            return cls(f"the Service Usage API is disabled in project {where}",
                       f"enable the bootstrap APIs first: gcloud services enable {SERVICE_USAGE} "
                       f"cloudresourcemanager.googleapis.com --project {where}", **kwargs)
        return cls(f"{service} is not enabled in project {where}: gcloud services enable {service} --project {where}",
                   "apis_enabled enables the ones gpuplat needs; just enabled: Google needs a few minutes to "
                   "propagate it", **kwargs)
    if cls is BillingDisabled:
        where = meta.get("project", "") or project
        return cls(f"billing is not enabled for project {where}",
                   f"link a billing account: gcloud billing projects link {where} --billing-account <ACCOUNT_ID>, "
                   f"then materialize apis_enabled again", **kwargs)
    if cls is QuotaExceeded:
        return cls(f"quota exceeded: {message.split(': ', 1)[-1]}",
                   "request an increase in the console, IAM & Admin > Quotas; approval can take hours", **kwargs)
    if cls is PermissionDenied:
        return cls(f"permission denied by Google: {message}",
                   "check the credentials' IAM roles on the project", **kwargs)
    if cls is ClusterBusy:
        return cls(f"GKE is busy with another operation on the cluster: {message}",
                   "wait for it to finish (gcloud container operations list) and materialize again", **kwargs)
    if cls is AccountNotPropagated:
        return cls(f"a service account is not known to Google yet: {message}",
                   "IAM is eventually consistent: a new account can take a minute or more to be usable; "
                   "materialize again", **kwargs)
    if cls is SecretVersionUnreadable:
        return cls(f"the secret's newest version cannot be read: {message}",
                   "enable that version (gcloud secrets versions enable) or add a new version", **kwargs)
    return GoogleError(f"Google API error {kwargs['code']} {kwargs['status']}: {message}".replace("  ", " "),
                       **kwargs)


def translated(api: str = "") -> Callable:
    """Decorate a `Google`/`Iam` method: the client library's exceptions leave it as gpuplat's."""

    def wrap(fn):
        @functools.wraps(fn)
        def call(self, *args, **kwargs):
            try:
                return fn(self, *args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - translated, or re-raised unchanged below
                mapped = to_gpuplat(exc, api, getattr(self, "project", ""))
                if mapped is exc:
                    raise
                raise mapped from None
        return call
    return wrap
