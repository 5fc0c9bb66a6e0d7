"""A gcloud configuration directory that points the real `gcloud` (and gke-gcloud-auth-plugin) at the sandbox.

`CLOUDSDK_CONFIG=<state dir>/gcloud gcloud container clusters list` then talks to the sandbox only:
every API through `api_endpoint_overrides/<api>` (plain http, trailing slash: gcloud appends the
version itself), credentials from `auth/access_token_file` (a long-lived token of the sandbox's
service account, which gke-gcloud-auth-plugin also hands kubectl through `gcloud config
config-helper`), and no metadata-server probe (`gce` pre-set to False, `core/check_gce_metadata`
off). Property names: https://cloud.google.com/sdk/gcloud/reference/topic/configurations .
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from ..stores import auth

if TYPE_CHECKING:
    from ..core import SandboxContext as Sandbox

# gcloud's API names -> the sandbox servers that answer them.
ENDPOINTS = {"container": "container", "compute": "compute", "serviceusage": "serviceusage",
             "secretmanager": "secretmanager", "iam": "iam", "cloudresourcemanager": "cloudresourcemanager",
             "artifactregistry": "artifactregistry"}
GCLOUD_TOKEN_TTL_S = 30 * 24 * 3600


def write_config(sb: "Sandbox", folder: Path) -> Path:
    urls = sb.urls()
    token_file = folder / "access-token"
    token = token_file.read_text().strip() if token_file.exists() else ""
    if not token or auth.principal(sb, "", token) is None:
        key = sb.service_account_key()
        token = auth.issue_token(sb, key["client_email"], GCLOUD_TOKEN_TTL_S)
    overrides = "\n".join(f"{api} = {urls[server]}/" for api, server in ENDPOINTS.items() if server in urls)
    config = f"""[core]
project = {sb.service_account_key()["project_id"]}
disable_usage_reporting = true
check_gce_metadata = false
enable_feature_flags = false

[component_manager]
disable_update_check = true

[survey]
disable_prompts = true

[auth]
access_token_file = {token_file}

[api_endpoint_overrides]
{overrides}
"""
    (folder / "configurations").mkdir(parents=True, exist_ok=True)
    _write(token_file, token, private=True)
    _write(folder / "configurations" / "config_default", config)
    _write(folder / "active_config", "default")
    _write(folder / "gce", "False")
    return folder


def _write(path: Path, text: str, private: bool = False) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    if private:
        tmp.chmod(0o600)
    os.replace(tmp, path)
