"""Simulation of the git server Argo CD reads: a repository URL served from a local checkout.

The sandbox has no network and no git server. `PUT /sandbox/git {repoURL, path}` says which local
directory holds the files a repository URL would serve (gpuplat registers the environment's
platform checkout, a test registers a fork). Every revision reads the working tree as it is: there
is one branch, and it is whatever is on disk. Readers here return parsed YAML documents, never raise
on a missing or broken file (a real repo-server reports those as sync errors): they return None or
skip the document, and say why in `problems`.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from ..core import ApiError
from ..wire.http import Request, Route

if TYPE_CHECKING:
    from ..core import SandboxContext as Sandbox


def normal_url(url: str) -> str:
    """Argo CD treats `https://host/org/repo`, `…/repo.git` and a trailing slash as one repository."""
    return str(url or "").strip().removesuffix("/").removesuffix(".git").lower()


def checkout(sb: "Sandbox", repo_url: str) -> Path | None:
    path = (sb.store.data.get("git") or {}).get(normal_url(repo_url))
    return Path(path) if path and Path(path).is_dir() else None


def _inside(root: Path, relative: str) -> Path | None:
    target = (root / relative.strip("/")).resolve()
    return target if target == root.resolve() or root.resolve() in target.parents else None


# file -> ((mtime, size, inode), its YAML documents). Argo CD's repo-server renders a revision once and
# caches the manifests; here a file is parsed again only when it changed, so a sync pass over many
# clusters reading one fork costs a copy per cluster instead of a YAML parse.
_PARSED: dict[str, tuple[tuple[int, int, int], list]] = {}


def _documents(f: Path) -> list:
    st = f.stat()
    stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
    hit = _PARSED.get(str(f))
    if hit is None or hit[0] != stamp:
        hit = (stamp, list(yaml.safe_load_all(f.read_text())))
        _PARSED[str(f)] = hit
    return copy.deepcopy(hit[1])  # the caller's to change: a sync writes them into a cluster


def read_yaml(sb: "Sandbox", repo_url: str, path: str) -> Any:
    """One file of the repository as YAML (the first document), or None when absent or not YAML."""
    root = checkout(sb, repo_url)
    target = _inside(root, path) if root else None
    if target is None or not target.is_file():
        return None
    try:
        docs = _documents(target)
    except (yaml.YAMLError, UnicodeDecodeError, OSError):
        return None
    return docs[0] if docs else None


def manifests(sb: "Sandbox", repo_url: str, path: str, recurse: bool, problems: list[str]) -> list[dict] | None:
    """The Kubernetes objects a directory source yields, as Argo CD's repo-server reads a plain
    directory (every *.yaml/*.yml/*.json, recursively when `directory.recurse`) or a kustomization
    that lists local resource files. None: the repository or path is not there."""
    root = checkout(sb, repo_url)
    base = _inside(root, path) if root else None
    if base is None or not base.is_dir():
        return None
    kustomization = next((base / n for n in ("kustomization.yaml", "kustomization.yml") if (base / n).is_file()), None)
    if kustomization is not None:
        spec = yaml.safe_load(kustomization.read_text()) or {}
        files = [base / str(r) for r in spec.get("resources") or [] if (base / str(r)).is_file()]
    else:
        pattern = "**/*" if recurse else "*"
        files = sorted(p for p in base.glob(pattern) if p.is_file() and p.suffix in (".yaml", ".yml", ".json"))
    out: list[dict] = []
    for f in files:
        try:
            docs = _documents(f)
        except (yaml.YAMLError, UnicodeDecodeError, OSError) as exc:
            problems.append(f"{f.relative_to(root)}: {exc.__class__.__name__}")
            continue
        out.extend(d for d in docs if isinstance(d, dict) and d.get("kind") and d.get("apiVersion"))
    return out


# ---- admin ---------------------------------------------------------------------------------------------
def put_git(sb: "Sandbox", req: Request):
    """`{repoURL, path}`: serve `repoURL` from the local directory `path` (null path: stop serving it)."""
    body = req.json()
    url = body.get("repoURL")
    if not url:
        raise ApiError(400, "git needs `repoURL` (and `path`, a local directory, or null)")
    repos = sb.store.section("git")
    before = repos.get(normal_url(url))
    if body.get("path") is None:
        repos.pop(normal_url(url), None)
    else:
        path = Path(str(body["path"])).expanduser().resolve()
        if not path.is_dir():
            raise ApiError(400, f"path {str(path)!r} is not a directory")
        repos[normal_url(url)] = str(path)
    if repos.get(normal_url(url)) != before:  # gpuplat says it again at every look at the platform
        sb.store.mark()
    return {"repos": dict(repos)}


def get_git(sb: "Sandbox", req: Request):
    return {"repos": dict(sb.store.data.get("git") or {})}


ADMIN_ROUTES = [
    Route("PUT", r"/sandbox/git", put_git, "sim.git.put"),
    Route("GET", r"/sandbox/git", get_git, "sim.git.get"),
]
