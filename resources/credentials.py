"""Google credentials for a GKE cluster's Kubernetes API: a bearer token from Application Default Credentials.

What `gke-gcloud-auth-plugin` does for kubectl, done in-process with google-auth, so neither gcloud
nor the plugin has to be installed where gpuplat runs (the Dagster webserver, daemon, run pods):
an OAuth access token of the ADC identity, refreshed before it expires
(https://cloud.google.com/kubernetes-engine/docs/how-to/api-server-authentication#environments-without-gcloud).
It asks the plugin's own scopes, cloud-platform and userinfo.email: with the email scope GKE knows a
service account by its email, so RBAC bound to that email applies (cmd/gke-gcloud-auth-plugin/
default_credentials_token_provider.go in kubernetes/cloud-provider-gcp).
On the sandbox the identity is its service account key, traded at its fake token endpoint the
same way google-auth trades a real one.
"""

from __future__ import annotations

import threading
from pathlib import Path

from .errors import TokenUnavailable

CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"
USERINFO_EMAIL = "https://www.googleapis.com/auth/userinfo.email"
# What gke-gcloud-auth-plugin asks for with application default credentials.
KUBE_SCOPES = (CLOUD_PLATFORM, USERINFO_EMAIL)
ERR_TOKEN = "cannot get a Google access token for the GKE cluster's API"
TOKEN_REMEDY = ("give the host Application Default Credentials that may use the cluster (gcloud auth "
                "application-default login, or GOOGLE_APPLICATION_CREDENTIALS) with roles/container.developer")


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
            return service_account.Credentials.from_service_account_file(str(self.key_file), scopes=list(KUBE_SCOPES))
        try:
            credentials, _ = google.auth.default(scopes=list(KUBE_SCOPES))
        except DefaultCredentialsError as exc:
            raise TokenUnavailable(f"{ERR_TOKEN}: no Application Default Credentials ({exc})", TOKEN_REMEDY) from None
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
                raise TokenUnavailable(f"{ERR_TOKEN}: refreshing {source} failed: {exc}", TOKEN_REMEDY) from None
            return self._credentials.token

    def invalidate(self) -> None:
        """Forget the token (the server refused it): the next `token()` asks for a new one."""
        with self._lock:
            if self._credentials is not None:
                self._credentials.token = None
