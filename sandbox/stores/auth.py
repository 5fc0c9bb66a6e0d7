"""Who may call the sandbox's Kubernetes APIs: Google access tokens from the fake OAuth server, and each
pre-provisioned cluster's own static token (what a bring-your-own kubeconfig carries).

Simulation: tokens are random strings kept in the state with their principal, scopes and expiry.
Expiry is wall-clock time, not the simulated clock, because clients (google-auth) judge a token's age
by their own clock; advancing the simulated clock must not expire everyone's credentials.

GKE knows a Google token's service account by its email only when the token carries the
`userinfo.email` scope, otherwise by its numeric unique id, so RBAC bound to the email applies only
then (kubernetes/cloud-provider-gcp, cmd/gke-gcloud-auth-plugin/default_credentials_token_provider.go:
"userinfo.email is used to authenticate to GKE APIs with gserviceaccount email instead of numeric
uniqueID").
"""

from __future__ import annotations

import secrets
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..core import SandboxContext as Sandbox

ACCESS_TOKEN_TTL_S = 3600
USERINFO_EMAIL = "https://www.googleapis.com/auth/userinfo.email"
# What a real cluster's administrator kubeconfig authenticates as.
CLUSTER_ADMIN = "kubernetes-admin"


def state(sb: "Sandbox") -> dict:
    section = sb.store.section("auth")
    section.setdefault("tokens", {})
    section.setdefault("cluster_tokens", {})
    return section


def issue_token(sb: "Sandbox", principal: str, ttl_s: int = ACCESS_TOKEN_TTL_S, scopes: tuple[str, ...] = (),
                unique_id: str = "") -> str:
    """A new access token for `principal` (a service account email), valid `ttl_s` seconds."""
    tokens = state(sb)["tokens"]
    now = time.time()
    for token in [t for t, rec in tokens.items() if rec["expires"] < now]:
        del tokens[token]  # expired ones go, so the state does not grow without bound
    token = "ya29.sandbox-" + secrets.token_urlsafe(32)
    tokens[token] = {"principal": principal, "expires": now + ttl_s, "scopes": list(scopes), "uniqueId": unique_id}
    sb.store.mark()
    return token


def cluster_token(sb: "Sandbox", cluster_id: str) -> str:
    """The static bearer token of one cluster's administrator kubeconfig (created once)."""
    tokens = state(sb)["cluster_tokens"]
    if cluster_id not in tokens:
        tokens[cluster_id] = secrets.token_urlsafe(32)
        sb.store.mark()
    return tokens[cluster_id]


def principal(sb: "Sandbox", cluster_id: str, token: str) -> str | None:
    """Who a bearer token authenticates as on `cluster_id`, or None when it is not valid there."""
    section = state(sb)
    if token and section["cluster_tokens"].get(cluster_id) == token:
        return CLUSTER_ADMIN
    rec = section["tokens"].get(token)
    if rec is None or rec["expires"] < time.time():
        return None
    if cluster_id and rec.get("uniqueId") and USERINFO_EMAIL not in (rec.get("scopes") or [USERINFO_EMAIL]):
        return rec["uniqueId"]
    return rec["principal"]
