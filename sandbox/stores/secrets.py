"""Secret Manager's state: secrets and their versions, payloads stored base64-encoded beside their metadata.

Simulation: the fake backend is the sandbox state file (`secretmanager` section); there is no
encryption, IAM, replication or rotation. Names use the project number, as Google's do
(`projects/123456789012/secrets/x`), whichever of id or number the caller used.

Never log or print a payload: tests and callers read it through `access_secret_version` or
`access_latest` only.
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING

from . import projects

if TYPE_CHECKING:
    from ..core import SandboxContext as Sandbox


def state(sb: "Sandbox") -> dict:
    return sb.store.section("secretmanager").setdefault("secrets", {})


def secret_name(number: str, secret_id: str) -> str:
    return f"projects/{number}/secrets/{secret_id}"


def access_latest(sb: "Sandbox", project: str, secret_id: str) -> bytes | None:
    """The latest enabled version's payload of a secret, or None if the secret or a version is missing.

    `project` may be an id or a number; call it under the state lock (controllers run under it).
    """
    rec = state(sb).get(secret_name(projects.project_number(sb, project), secret_id))
    if rec is None:
        return None
    enabled = [v for v in rec["versions"] if v["meta"].get("state") == "ENABLED"]
    return base64.b64decode(enabled[-1]["data"]) if enabled else None


def secret_ids(sb: "Sandbox", project: str) -> list[str]:
    """Ids of the project's secrets (with or without versions)."""
    prefix = f"projects/{projects.project_number(sb, project)}/secrets/"
    return sorted(n[len(prefix):] for n in state(sb) if n.startswith(prefix))
