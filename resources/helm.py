"""Helm's release records, read from the cluster: which chart version and values a release runs.

Helm 3 keeps each release revision in a Secret `sh.helm.release.v1.<release>.v<N>` (type
`helm.sh/release.v1`, labels owner=helm, name, status, version) whose `release` field is base64 of
gzipped JSON (helm/pkg/storage/driver/secrets.go and util.go). gpuplat reads it to adopt an Argo CD
the seed's `bootstrap/install.sh` installed and to see a version or values change; the values are
compared in memory and never logged (a values file may carry credentials).
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
from dataclasses import dataclass

from .kube import Kube

GZIP_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True)
class HelmRelease:
    name: str
    namespace: str
    revision: int
    status: str
    chart: str
    chart_version: str
    values: dict

    @property
    def values_digest(self) -> str:
        return values_digest(self.values)


def values_digest(values: dict) -> str:
    return hashlib.sha256(json.dumps(values or {}, sort_keys=True).encode()).hexdigest()[:16]


def decode_release(field: str) -> dict:
    """The `release` field as the API returns it (base64 of Helm's base64 of gzipped JSON)."""
    raw = base64.b64decode(base64.b64decode(field))
    if raw[:2] == GZIP_MAGIC:
        raw = gzip.decompress(raw)
    return json.loads(raw)


def releases(kube: Kube, namespace: str) -> list[HelmRelease]:
    """The deployed revision of every release in `namespace` (only those records are read: older
    revisions hold whole manifests nobody needs here)."""
    newest: dict[str, tuple[int, dict]] = {}
    for secret in kube.list("v1", "Secret", namespace, "owner=helm,status=deployed"):
        labels = (secret.get("metadata") or {}).get("labels") or {}
        try:
            revision = int(labels.get("version", "0"))
        except ValueError:
            continue
        name = labels.get("name", "")
        if name and revision > newest.get(name, (0, {}))[0]:
            newest[name] = (revision, secret)
    out = []
    for name, (revision, secret) in sorted(newest.items()):
        try:
            record = decode_release(((secret.get("data") or {}).get("release")) or "")
        except (ValueError, OSError, json.JSONDecodeError):
            continue  # not a record Helm 3 wrote: not a release gpuplat can read
        meta = (record.get("chart") or {}).get("metadata") or {}
        out.append(HelmRelease(name, namespace, revision, (record.get("info") or {}).get("status", ""),
                               meta.get("name", ""), meta.get("version", ""), record.get("config") or {}))
    return out
