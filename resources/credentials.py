"""Google credentials for a GKE cluster's Kubernetes API: a bearer token from Application Default Credentials.

What `gke-gcloud-auth-plugin` does for kubectl, done in-process with google-auth, so neither gcloud
nor the plugin has to be installed where gpuplat runs (the Dagster webserver, daemon, run pods):
an OAuth access token of the ADC identity (cloud-platform scope), refreshed before it expires
(https://cloud.google.com/kubernetes-engine/docs/how-to/api-server-authentication#environments-without-gcloud).
On the sandbox the identity is its service account key, traded at its fake token endpoint the
same way google-auth trades a real one.
"""

from __future__ import annotations

import threading
from pathlib import Path

CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"
ERR_TOKEN = "cannot get a Google access token for the GKE cluster's API"


class TokenUnavailable(Exception):
    """The credentials could not produce a token: one line that says which and why."""


_SHARED: dict[str, "GoogleTokens"] = {}
_SHARED_LOCK = threading.Lock()


def tokens_for(key_file: Path | None = None) -> "GoogleTokens":
    """One token source per identity in this process, so every asset step and sensor tick reuses
    the token until it expires, as gke-gcloud-auth-plugin's cache does for kubectl."""
    key = str(key_file or "")
    with _SHARED_LOCK:
        if key not in _SHARED:
            _SHARED[key] = GoogleTokens(key_file)
        return _SHARED[key]


class GoogleTokens:
    """Access tokens of one identity, refreshed when google-auth says they are no longer valid."""

    def __init__(self, key_file: Path | None = None):
        self.key_file = key_file  # None: Application Default Credentials
        self._credentials = None
        self._lock = threading.Lock()

    def _load(self):
        import google.auth
        from google.auth.exceptions import DefaultCredentialsError
        from google.oauth2 import service_account

        if self.key_file is not None:
            return service_account.Credentials.from_service_account_file(str(self.key_file), scopes=[CLOUD_PLATFORM])
        try:
            credentials, _ = google.auth.default(scopes=[CLOUD_PLATFORM])
        except DefaultCredentialsError as exc:
            raise TokenUnavailable(f"{ERR_TOKEN}: no Application Default Credentials ({exc}); run `gcloud auth "
                                   f"application-default login` or set GOOGLE_APPLICATION_CREDENTIALS") from None
        return credentials

    def token(self) -> str:
        from google.auth.exceptions import GoogleAuthError
        from google.auth.transport.requests import Request

        with self._lock:
            try:
                if self._credentials is None:
                    self._credentials = self._load()
                if not self._credentials.valid:
                    self._credentials.refresh(Request())
            except GoogleAuthError as exc:
                source = self.key_file or "Application Default Credentials"
                raise TokenUnavailable(f"{ERR_TOKEN}: refreshing {source} failed: {exc}") from None
            return self._credentials.token

    def invalidate(self) -> None:
        """Forget the token (the server refused it): the next `token()` asks for a new one."""
        with self._lock:
            if self._credentials is not None:
                self._credentials.token = None
