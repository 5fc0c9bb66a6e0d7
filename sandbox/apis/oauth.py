"""Google's OAuth 2.0 token endpoint (`oauth2.googleapis.com/token`), for the sandbox's service account.

A client holding the sandbox's service-account key (`credentials.json` in the state directory, as
`GOOGLE_APPLICATION_CREDENTIALS` would name a real one) signs a JWT assertion and trades it here for
an access token (the `urn:ietf:params:oauth:grant-type:jwt-bearer` grant, RFC 7523), exactly as
google-auth does against Google (https://developers.google.com/identity/protocols/oauth2/service-account).
The assertion's signature, issuer, audience and expiry are checked; errors are OAuth's
`{"error": ..., "error_description": ...}` with status 400.
"""

from __future__ import annotations

import base64
import json
import time
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

from ..core import ApiError
from ..stores.auth import ACCESS_TOKEN_TTL_S, issue_token
from ..wire.http import Request, Response, Route

if TYPE_CHECKING:
    from ..core import SandboxContext as Sandbox

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
# google-auth puts Google's own token endpoint in `aud` whatever `token_uri` the key file names.
GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"


def _b64(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def oauth_error(err: ApiError) -> Response:
    return Response(err.code, {"error": err.status, "error_description": err.message})


def _invalid(message: str, error: str = "invalid_grant") -> ApiError:
    return ApiError(400, message, status=error)


def verify_assertion(key: dict, token_uri: str, assertion: str) -> dict:
    """The claims of a JWT assertion signed by the service account's key, or ApiError(400)."""
    try:
        head_b64, body_b64, sig_b64 = assertion.split(".")
        header, claims = json.loads(_b64(head_b64)), json.loads(_b64(body_b64))
    except (ValueError, UnicodeDecodeError):
        raise _invalid("Invalid JWT: not a signed JWT (header.payload.signature)") from None
    if header.get("alg") != "RS256":
        raise _invalid(f"Invalid JWT: algorithm {header.get('alg')!r} is not RS256")
    public = serialization.load_pem_private_key(key["private_key"].encode(), password=None).public_key()
    try:
        public.verify(_b64(sig_b64), f"{head_b64}.{body_b64}".encode(), padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        raise _invalid("Invalid JWT Signature.") from None
    if claims.get("iss") != key["client_email"]:
        raise _invalid(f"Invalid JWT: issuer {claims.get('iss')!r} is not {key['client_email']}")
    if claims.get("aud") not in (token_uri, GOOGLE_TOKEN_AUDIENCE):
        raise _invalid(f"Invalid JWT: audience {claims.get('aud')!r} is not {GOOGLE_TOKEN_AUDIENCE}")
    if not isinstance(claims.get("exp"), (int, float)) or claims["exp"] < time.time():
        raise _invalid("Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe.")
    return claims


def token(sb: "Sandbox", req: Request):
    form = {k: v[0] for k, v in parse_qs(req.body.decode(errors="replace")).items()}
    if form.get("grant_type") != JWT_BEARER:
        raise _invalid(f"Unsupported grant type: {form.get('grant_type')!r}", "unsupported_grant_type")
    key = sb.service_account_key()
    claims = verify_assertion(key, sb.urls()["oauth2"] + "/token", form.get("assertion", ""))
    access = issue_token(sb, claims["iss"], scopes=tuple(str(claims.get("scope") or "").split()),
                         unique_id=str(key.get("client_id") or ""))
    return {"access_token": access, "expires_in": ACCESS_TOKEN_TTL_S, "token_type": "Bearer"}


# Issuing a token changes nothing a client would call state: it is counted as a read.
ROUTES = [Route("POST", r"/token", token, "Token")]
