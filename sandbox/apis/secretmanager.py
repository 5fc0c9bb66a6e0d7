"""Secret Manager v1: secrets and their versions.

Simulation: the fake backend is the sandbox state file (`secretmanager` section), payloads stored
base64-encoded beside their metadata; there is no encryption, IAM, replication or rotation. Names
use the project number, as Google's do (`projects/123456789012/secrets/x`), whichever of id or
number the caller used (`projects.project_number`). Replication is accepted as given (automatic
or user-managed) and required. `dataCrc32c`, when sent, is verified (400 on mismatch), and access
always returns it. Versions can be disabled, enabled and destroyed (as a user does by hand, which
gpuplat must notice); list versions takes the `state:` filter. Nothing deletes a secret.
"""

from __future__ import annotations

import base64
import re
from typing import TYPE_CHECKING

from google.cloud import secretmanager_v1

from ..core import ApiError
from ..stores import projects
from ..stores.secrets import secret_name, state
from ..wire.google import emit_google, google_page, parse_google_body
from ..wire.http import Request, Route, fault_error

if TYPE_CHECKING:
    from ..core import SandboxContext as Sandbox


SECRET_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,255}$")

MAX_PAYLOAD = 65536

MAX_PAGE = 25000


def _crc32c_table() -> list[int]:
    table = []
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table

_CRC_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC32C (Castagnoli), the checksum Secret Manager uses for `data_crc32c`."""
    crc = 0xFFFFFFFF
    for b in data:
        crc = _CRC_TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _get(sb: "Sandbox", project: str, secret_id: str) -> tuple[str, dict]:
    number = projects.project_number(sb, project)
    name = secret_name(number, secret_id)
    rec = state(sb).get(name)
    if rec is None:
        raise ApiError(404, f"Secret [{name}] not found.")
    return name, rec


def _etag(sb: "Sandbox") -> str:
    return f"\"{int(sb.clock.now() * 1_000_000):x}\""


def _resolve_version(name: str, rec: dict, version: str) -> dict:
    """`latest` is "an alias to the most recently created SecretVersion" whatever its state
    (https://cloud.google.com/secret-manager/docs/reference/rest/v1/projects.secrets.versions/access)."""
    if version == "latest":
        if not rec["versions"]:
            raise ApiError(404, f"Secret [{name}] not found or has no versions.")
        return rec["versions"][-1]
    if not version.isdigit():
        raise ApiError(400, f"Invalid secret version \"{version}\": expected a number or \"latest\".")
    for v in rec["versions"]:
        if v["meta"]["name"].rsplit("/", 1)[-1] == version:
            return v
    raise ApiError(404, f"Secret Version [{name}/versions/{version}] not found.")


def _refuse_fault(req: Request, op: str) -> None:
    """An injected quota/stockout fault fails a write before it changes anything."""
    if req.fault is not None:
        kind, req.fault = req.fault, None
        raise fault_error(kind, op)


def create_secret(sb: "Sandbox", req: Request):
    _refuse_fault(req, "CreateSecret")
    project = req.match["project"]
    secret_id = req.param("secretId") or ""
    if not SECRET_ID_RE.match(secret_id):
        raise ApiError(400, "Invalid secret_id: it must be 1 to 255 characters of ASCII letters, digits, "
                            "underscores (_) and hyphens (-).")
    body = parse_google_body(req, secretmanager_v1.Secret)
    replication = body.get("replication") or {}
    if "automatic" not in replication and "userManaged" not in replication:
        raise ApiError(400, "Secret.replication must be specified (automatic or user_managed).")
    number = projects.project_number(sb, project)
    name = secret_name(number, secret_id)
    secrets = state(sb)
    if name in secrets:
        raise ApiError(409, f"Secret [{name}] already exists.")
    meta = {"name": name, "replication": replication, "createTime": sb.clock.rfc3339(), "etag": _etag(sb)}
    for k in ("labels", "annotations", "topics", "versionAliases"):
        if body.get(k):
            meta[k] = body[k]
    secrets[name] = {"meta": meta, "versions": []}
    sb.store.mark()
    return emit_google(req, secretmanager_v1.Secret, meta)


def get_secret(sb: "Sandbox", req: Request):
    _, rec = _get(sb, req.match["project"], req.match["secret"])
    return emit_google(req, secretmanager_v1.Secret, rec["meta"])


def list_secrets(sb: "Sandbox", req: Request):
    prefix = f"projects/{projects.project_number(sb, req.match['project'])}/secrets/"
    names = [n for n in state(sb) if n.startswith(prefix)]
    chunk, token = google_page(req, names, MAX_PAGE, MAX_PAGE)
    secrets = state(sb)
    return emit_google(req, secretmanager_v1.ListSecretsResponse,
                 {"secrets": [secrets[n]["meta"] for n in chunk], "nextPageToken": token, "totalSize": len(names)})


def add_version(sb: "Sandbox", req: Request):
    _refuse_fault(req, "AddSecretVersion")
    name, rec = _get(sb, req.match["project"], req.match["secret"])
    body = parse_google_body(req, secretmanager_v1.AddSecretVersionRequest)
    payload = body.get("payload") or {}
    data = base64.b64decode(payload.get("data", ""))
    if len(data) > MAX_PAYLOAD:
        raise ApiError(400, f"Secret payload data exceeds the maximum size of {MAX_PAYLOAD} bytes.")
    checksum = crc32c(data)
    sent = payload.get("dataCrc32c")
    if sent is not None and int(sent) != checksum:
        raise ApiError(400, "Checksum mismatch: the data_crc32c sent does not match the CRC32C of the payload "
                            "data (data integrity check failed).")
    number = len(rec["versions"]) + 1
    meta = {"name": f"{name}/versions/{number}", "createTime": sb.clock.rfc3339(), "state": "ENABLED",
            "replicationStatus": {"automatic": {}} if "automatic" in rec["meta"]["replication"]
            else {"userManaged": {"replicas": [{"location": r.get("location", "")} for r in
                                               rec["meta"]["replication"].get("userManaged", {}).get("replicas", [])]}},
            "etag": _etag(sb)}
    if sent is not None:
        meta["clientSpecifiedPayloadChecksum"] = True
    rec["versions"].append({"meta": meta, "data": base64.b64encode(data).decode(), "crc32c": str(checksum)})
    sb.store.mark()
    return emit_google(req, secretmanager_v1.SecretVersion, meta)


def get_version(sb: "Sandbox", req: Request):
    name, rec = _get(sb, req.match["project"], req.match["secret"])
    return emit_google(req, secretmanager_v1.SecretVersion, _resolve_version(name, rec, req.match["version"])["meta"])


def access_version(sb: "Sandbox", req: Request):
    project, secret_id, version = req.match["project"], req.match["secret"], req.match["version"]
    number = projects.project_number(sb, project)
    name = secret_name(number, secret_id)
    rec = state(sb).get(name)
    if rec is None:
        if version == "latest":
            raise ApiError(404, f"Secret [{name}] not found or has no versions.")
        raise ApiError(404, f"Secret Version [{name}/versions/{version}] not found.")
    v = _resolve_version(name, rec, version)
    state_ = v["meta"].get("state", "ENABLED")
    if state_ != "ENABLED":
        # What ESO's `versions/latest` read meets when the newest version is disabled
        # (external-secrets/external-secrets#4042; REST: google-github-actions/get-secretmanager-secrets#268).
        raise ApiError(400, f"Secret Version [{v['meta']['name']}] is in {state_} state.",
                       status="FAILED_PRECONDITION")
    return emit_google(req, secretmanager_v1.AccessSecretVersionResponse,
                 {"name": v["meta"]["name"], "payload": {"data": v["data"], "dataCrc32c": v["crc32c"]}})

VERSION_STATES = ("ENABLED", "DISABLED", "DESTROYED")


def _version_filter(req: Request) -> str | None:
    """The one filter form gpuplat and the seed use, `state:ENABLED` (https://cloud.google.com/secret-manager/docs/filtering)."""
    text = (req.param("filter") or "").strip()
    if not text:
        return None
    m = re.fullmatch(r"state\s*[:=]\s*(\w+)", text)
    if m is None or m.group(1).upper() not in VERSION_STATES:
        raise ApiError(400, f"Invalid filter: {text!r} (the sandbox supports state:ENABLED|DISABLED|DESTROYED).")
    return m.group(1).upper()


def list_versions(sb: "Sandbox", req: Request):
    _, rec = _get(sb, req.match["project"], req.match["secret"])
    wanted = _version_filter(req)
    # Newest first, as Secret Manager lists them.
    metas = [v["meta"] for v in reversed(rec["versions"]) if wanted is None or v["meta"].get("state") == wanted]
    chunk, token = google_page(req, metas, MAX_PAGE, MAX_PAGE)
    return emit_google(req, secretmanager_v1.ListSecretVersionsResponse,
                 {"versions": chunk, "nextPageToken": token, "totalSize": len(metas)})


def _set_state(new_state: str):
    def handler(sb: "Sandbox", req: Request):
        name, rec = _get(sb, req.match["project"], req.match["secret"])
        v = _resolve_version(name, rec, req.match["version"])
        if v["meta"].get("state") == "DESTROYED":
            raise ApiError(400, f"Secret Version [{v['meta']['name']}] is in DESTROYED state.",
                           status="FAILED_PRECONDITION")
        v["meta"]["state"] = new_state
        v["meta"]["etag"] = _etag(sb)
        if new_state == "DESTROYED":
            v["meta"]["destroyTime"] = sb.clock.rfc3339()
            v["data"], v["crc32c"] = "", "0"
        sb.store.mark()
        return emit_google(req, secretmanager_v1.SecretVersion, v["meta"])
    return handler

_S = r"/v1/projects/(?P<project>[^/]+)/secrets"

_SID = _S + r"/(?P<secret>[^/:]+)"

_V = _SID + r"/versions/(?P<version>[^/:]+)"

ROUTES = [
    Route("POST", _S, create_secret, "CreateSecret", True),
    Route("GET", _S, list_secrets, "ListSecrets"),
    Route("GET", _SID, get_secret, "GetSecret"),
    Route("POST", _SID + r":addVersion", add_version, "AddSecretVersion", True),
    Route("GET", _SID + r"/versions", list_versions, "ListSecretVersions"),
    Route("GET", _V + r":access", access_version, "AccessSecretVersion"),
    Route("POST", _V + r":disable", _set_state("DISABLED"), "DisableSecretVersion", True),
    Route("POST", _V + r":enable", _set_state("ENABLED"), "EnableSecretVersion", True),
    Route("POST", _V + r":destroy", _set_state("DESTROYED"), "DestroySecretVersion", True),
    Route("GET", _V, get_version, "GetSecretVersion"),
]
