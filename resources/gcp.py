"""What every Google client of one project shares: its endpoints, its retries and its clock.

`Google` (GKE, Service Usage, Secret Manager, Compute, Billing) and `Iam` (accounts, policies,
Artifact Registry) are both a `GcpProject`; neither imports the other.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, TypeVar

from .google_errors import gexc, is_transient

T = TypeVar("T")

# gpuplat speaks to Google with the synchronous clients only. google-api-core imports its optional async
# REST transport for long-running operations whenever google-auth's aiohttp session can be found, and
# aiohttp is installed here (the kubernetes package requires it): 40 modules and ~0.1 s of every run's
# first Google import, and more at exit, for a transport nothing calls. An entry of None in sys.modules is
# Python's own way to say a module cannot be imported; google-api-core then goes on without it (its
# `except ImportError`, the path taken where aiohttp is absent).
sys.modules.setdefault("google.auth.aio.transport.sessions", None)  # type: ignore[arg-type]

# A service enabled a moment ago may answer SERVICE_DISABLED for a few minutes ("wait a few minutes for
# the action to propagate to our systems and retry", the error's own words), so it is retried for that
# long. Dagster runs each step in its own process: when gpuplat enabled what is noted in a file, one
# folder per Google target (the real APIs, or one sandbox's endpoints).
PROPAGATION_S = 300.0


def default_retry(deadline: float = 180.0, predicate: Callable[[Exception], bool] = is_transient,
                  on_error: Callable[[Exception], None] | None = None):
    """Backoff from 0.2 s to 5 s between attempts, for at most `deadline` seconds."""
    from google.api_core.retry import Retry
    return Retry(predicate=predicate, initial=0.2, maximum=5.0, multiplier=2.0, timeout=deadline, on_error=on_error)


class EnabledMarks:
    """When gpuplat enabled which service, per project, for one Google target.

    A SERVICE_DISABLED names its consumer by project number (`consumer: projects/<number>`, as
    error_reason.proto's example and real answers do) or by id: a mark is kept under both, the number
    read from the enable operation's own answer (each enabled Service's `parent`)."""

    def __init__(self, endpoints: dict[str, str] | None):
        target = hashlib.sha1(repr(sorted(endpoints.items())).encode()).hexdigest()[:12] if endpoints else "google"
        self.root = Path(tempfile.gettempdir()) / f"gpuplat-enabled-{os.getuid()}" / target

    def mark(self, project: str, services: list[str], number: str = "") -> None:
        for consumer in {project, number} - {""}:
            for service in services:
                marker = self.root / consumer / service
                marker.parent.mkdir(parents=True, exist_ok=True)
                marker.touch()

    def propagating(self, exc: Exception) -> bool:
        """A SERVICE_DISABLED for a service gpuplat enabled less than PROPAGATION_S ago."""
        if not isinstance(exc, gexc.Forbidden) or getattr(exc, "reason", None) != "SERVICE_DISABLED":
            return False
        meta = exc.metadata or {}
        marker = self.root / (meta.get("consumer", "").removeprefix("projects/") or "-") / (meta.get("service") or "-")
        try:
            return time.time() - marker.stat().st_mtime < PROPAGATION_S
        except OSError:
            return False


# One client per API and target for the whole process. A client is not bound to a project, and building
# one wraps every RPC of its service (about 2 ms of CPU for GKE's) and, against Google, looks for
# credentials: a drift tick over hundreds of environments built a dozen clients per environment every
# minute. Google's clients may be shared between threads.
_CLIENTS: dict[tuple[str, str], object] = {}
_CLIENTS_LOCK = threading.Lock()
# A process that meets many targets (sandboxes on ever new ports, in tests) lets the oldest go.
_CLIENTS_MAX = 64


class GcpProject:
    """One GCP project on one Google target (the real APIs, or the sandbox's `endpoints`)."""

    def __init__(self, project: str, endpoints: dict[str, str] | None = None,
                 sleeper: Callable[[float], None] = time.sleep, timer: Callable[[], float] = time.monotonic,
                 retry_deadline: float = 180.0, progress: Callable[[str], None] | None = None):
        self.project = project
        self.endpoints = endpoints
        self.sleeper = sleeper
        self.timer = timer
        self.retry_deadline = retry_deadline
        # Where a long wait says how it goes (the run's log); None: nowhere.
        self.progress = progress
        self.enabled_marks = EnabledMarks(endpoints)

    # Built per call, never kept on the object: a Retry's predicate refers back to this object, and kept it
    # would make every client a reference cycle, garbage only the collector frees (a fleet's tick makes one
    # per environment). Each call's wait is its own: "so far" counts from that call's first error.
    @property
    def retry(self):
        return self.retry_for("", on_error=self.waiting("a Google API"))

    def retry_for(self, api: str, deadline: float | None = None, on_error: Callable[[Exception], None] | None = None):
        """The retry of calls to `api`: what is transient for it, or a service gpuplat just enabled."""
        return default_retry(self.retry_deadline if deadline is None else deadline,
                             lambda exc: is_transient(exc, api) or self.enabled_marks.propagating(exc), on_error)

    def waiting(self, what: str, every: float = 30.0) -> Callable[[Exception], None]:
        """An `on_error` for a retry: at most every `every` seconds, one progress line naming why it waits."""
        from .google_errors import to_gpuplat

        started: list[float] = []

        def report(exc: Exception) -> None:
            now = self.timer()
            if not started:
                started[:] = [now, now - every]
            if self.progress is None or now - started[1] < every:
                return
            started[1] = now
            cause = to_gpuplat(exc, "", self.project)
            line = cause.message if hasattr(cause, "message") else type(exc).__name__
            self.progress(f"waiting on {what}: {line} (retrying, {now - started[0]:.0f}s so far)")
        return report

    def shared_client(self, api: str, make: Callable[[], T], kind: str = "") -> T:
        """This target's client of `api` (built by `make` once per process); `kind` tells apart two
        clients of one API."""
        key = (f"{api}/{kind}", (self.endpoints or {}).get(api, "google"))
        with _CLIENTS_LOCK:
            client = _CLIENTS.get(key)
            if client is None:
                if len(_CLIENTS) >= _CLIENTS_MAX:
                    _CLIENTS.pop(next(iter(_CLIENTS)))
                client = _CLIENTS[key] = make()
        return client

    def _kwargs(self, api: str) -> dict:
        if self.endpoints is None:
            return {"transport": "rest"}
        from google.api_core.client_options import ClientOptions
        from google.auth.credentials import AnonymousCredentials
        return {"transport": "rest", "credentials": AnonymousCredentials(),
                "client_options": ClientOptions(api_endpoint=self.endpoints[api])}
