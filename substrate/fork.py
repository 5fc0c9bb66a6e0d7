"""The platform fork: the user's checkout of the seed platform, whose files are the truth for what
gpuplat applies and checks.

An environment names its checkout (`substrate.platform_repo`, default: the repository that holds
the `environments/` folder gpuplat reads). gpuplat reads the files as they are on disk and records
the commit they are at ("uncommitted changes" when the tree differs). Each reader here takes one of
the seed's files and returns data; a missing or malformed file is one `ConfigError` naming the
file and the remedy the seed itself gives (for instance `make resolve-groups`).
"""

from __future__ import annotations

import re
import subprocess
import threading
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from .config import ConfigError, EnvConfig, load_yaml, load_yaml_documents
from .environments import environments_dir

# The seed's deploy profiles (`make root PROFILE=...`) and the layers each one applies.
LAYERS = {
    "platform": ("platform",),
    "serving": ("platform", "serving"),
    "llm-gateway": ("platform", "serving", "routing", "llm-gateway"),
    "full": ("platform", "serving", "routing", "llm-gateway", "experience", "demos"),
}
INSTALL_SCRIPT = "bootstrap/install.sh"
ARGOCD_VALUES = "bootstrap/argo-cd/values.yaml"
SEED_SECRETS_SCRIPT = "scripts/seed-secrets.sh"
ESO_VALUES = "platform/external-secrets/values.yaml"
SECRET_STORE_FILE = "platform/external-secrets/config/clustersecretstore.yaml"
ESO_GSA_ANNOTATION = "iam.gke.io/gcp-service-account"


@dataclass(frozen=True)
class SeedSecretNames:
    """The names `scripts/seed-secrets.sh` seeds: hex32 keys, the hex16 cookie key, Dex's pair."""

    hex_keys: tuple[str, ...]
    cookie_key: str
    dex_password: str
    dex_hash: str
    source: str  # the script they were read from, or "gpuplat's copy of the seed's list"


# What the seed's script held at the snapshot gpuplat was built against; used when a fork has no script.
SEED_SECRET_DEFAULTS = SeedSecretNames(
    ("litellm-master-key", "litellm-salt-key", "vllm-api-key", "litellm-db-password", "litellm-grafana-ro-password",
     "dex-oauth2-proxy-client-secret", "dex-argocd-client-secret", "dex-litellm-client-secret",
     "dex-grafana-client-secret", "dex-open-webui-client-secret", "dex-tabby-client-secret", "n8n-encryption-key"),
    "oauth2-proxy-cookie-secret", "dex-admin-password", "dex-admin-hash", "gpuplat's copy of the seed's list")


# root -> (when it was read, what it said). Environments of a fleet mostly share one checkout, and a
# drift tick reads every environment's desired state: two git processes per environment per tick would
# be hundreds a minute for one answer. A commit made now is seen at most COMMIT_TTL_S later.
_COMMITS: dict[Path, tuple[float, str]] = {}
_LOCKS: dict[Path, threading.Lock] = {}
_LOCKS_LOCK = threading.Lock()
COMMIT_TTL_S = 2.0


def checkout_commit(root: Path) -> str:
    """`<sha>`, `<sha> + uncommitted changes`, or `not a git checkout` for the checkout at `root`."""
    with _LOCKS_LOCK:
        lock = _LOCKS.setdefault(root, threading.Lock())
    with lock:  # one reader per checkout: threads asking for the same one wait for its answer
        seen = _COMMITS.get(root)
        if seen is not None and time.monotonic() - seen[0] < COMMIT_TTL_S:
            return seen[1]

        def git(*args: str) -> str | None:
            try:
                done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=20)
            except (OSError, subprocess.TimeoutExpired):
                return None
            return done.stdout.strip() if done.returncode == 0 else None
        head = git("rev-parse", "HEAD")
        dirty = head is not None and git("status", "--porcelain", "--", ".")
        said = "not a git checkout" if head is None else f"{head[:12]} + uncommitted changes" if dirty else head[:12]
        _COMMITS[root] = (time.monotonic(), said)  # one entry per checkout the process reads: a handful
        return said


# (config path, platform_repo) -> (when resolved, the checkout). Every piece of every environment asks, six
# times an environment per tick; resolving follows symlinks (git-sync flips one to each new worktree), so
# an answer is kept as briefly as a commit is.
_REPOS: dict[tuple[str, str], tuple[float, Path]] = {}


def repo_of(env: EnvConfig) -> Path:
    """The platform checkout of `env`: `substrate.platform_repo` (relative to the repository holding
    `environments/`), else that repository itself."""
    given = env.substrate.platform_repo
    key = (env.path or str(environments_dir()), given)
    seen = _REPOS.get(key)
    if seen is not None and time.monotonic() - seen[0] < COMMIT_TTL_S:
        return seen[1]
    envs = Path(env.path).parent.parent if env.path else environments_dir()
    holder = envs.resolve().parent
    root = (holder / Path(given).expanduser()).resolve() if given else holder
    if len(_REPOS) > 4096:  # environments come and go in a long-lived code server
        _REPOS.clear()
    _REPOS[key] = (time.monotonic(), root)
    return root


def _shell_assignment(text: str, name: str) -> str | None:
    """`NAME="value"` (or 'value', or bare) at the start of a line of a shell script."""
    m = re.search(rf'^\s*{re.escape(name)}=(?:"([^"]*)"|\'([^\']*)\'|(\S*))', text, re.MULTILINE)
    return None if m is None else next(g for g in m.groups() if g is not None)


def _normal_url(url: str) -> str:
    return url.strip().removesuffix("/").removesuffix(".git").lower()


@dataclass(frozen=True)
class Fork:
    root: Path
    env_name: str  # its clusters/<env>/ folder, as the seed's ENV names it

    @classmethod
    def of(cls, env: EnvConfig) -> "Fork":
        root = repo_of(env)
        if not root.is_dir():
            raise ConfigError(env.path or str(root), "substrate.platform_repo", str(root),
                              "a directory holding your platform checkout (the fork of the seed platform)",
                              problem=f"{str(root)!r} is not a directory")
        return cls(root, env.name)

    def path(self, relative: str) -> Path:
        return self.root / relative

    @property
    def cluster_dir(self) -> str:
        return f"clusters/{self.env_name}"

    # ---- where the files are at ----------------------------------------------------------------
    @cached_property
    def commit(self) -> str:
        """`<sha>`, `<sha> + uncommitted changes`, or `not a git checkout`."""
        return checkout_commit(self.root)

    # ---- make root ----------------------------------------------------------------------------
    def root_files(self, profile: str) -> tuple[Path, ...]:
        """What `make root PROFILE=<profile>` applies: clusters/<env>/projects/*.yaml and one
        clusters/<env>/appsets/<layer>.yaml per layer of the profile."""
        projects = sorted(p for p in self.path(f"{self.cluster_dir}/projects").glob("*.y*ml") if p.is_file())
        if not projects:
            raise ConfigError(str(self.path(f"{self.cluster_dir}/projects")), "(folder)", None,
                              "the AppProject(s) `make root` applies, as *.yaml files",
                              problem="holds no YAML file (or is missing)")
        appsets = []
        for layer in LAYERS[profile]:
            p = self.path(f"{self.cluster_dir}/appsets/{layer}.yaml")
            if not p.is_file():
                raise ConfigError(str(p), "(file)", None,
                                  f"one ApplicationSet file per layer of profile {profile} "
                                  f"({', '.join(LAYERS[profile])})", problem="is missing")
            appsets.append(p)
        return (*projects, *appsets)

    def root_objects(self, profile: str, repo_url: str = "", config_path: str = "") -> tuple[dict, ...]:
        """The root objects as the files hold them. With `repo_url`: every ApplicationSet's git
        generator must read that repository, or Argo CD would read another one than the config names."""
        out = []
        for f in self.root_files(profile):
            for i, doc in enumerate(load_yaml_documents(f)):
                if doc is None:
                    continue
                meta = doc.get("metadata") if isinstance(doc, dict) else None
                if not (isinstance(meta, dict) and meta.get("name") and doc.get("apiVersion") and doc.get("kind")):
                    raise ConfigError(str(f), f"document {i + 1}", None,
                                      "a Kubernetes object with apiVersion, kind and metadata.name",
                                      problem="is not a Kubernetes object")
                if repo_url and doc.get("kind") == "ApplicationSet":
                    for j, gen in enumerate((doc.get("spec") or {}).get("generators") or []):
                        url = ((gen or {}).get("git") or {}).get("repoURL")
                        if url and _normal_url(url) != _normal_url(repo_url):
                            raise ConfigError(str(f), f"spec.generators[{j}].git.repoURL", url,
                                              f"the repoURL of {config_path or 'the environment config'} "
                                              f"({repo_url}); the seed's `make fork-init` rewrites the URL across the "
                                              f"fork")
                out.append(doc)
        return tuple(out)

    def groups(self) -> list[dict]:
        """clusters/<env>/groups.generated.yaml, which every layer's ApplicationSet reads."""
        p = self.path(f"{self.cluster_dir}/groups.generated.yaml")
        remedy = ("run `make resolve-groups` in the fork (it writes the groups every layer's ApplicationSet "
                  "reads from config.yaml's features) and commit the file")
        if not p.is_file():
            raise ConfigError(str(p), "(file)", None, "", problem="is missing", remedy=remedy)
        try:
            data = load_yaml(p)
        except ConfigError as exc:
            if exc.problem != "the file is empty":
                raise
            data = None
        if not isinstance(data, list) or not data:
            raise ConfigError(str(p), "(file)", None, "", problem="is empty: it holds no groups", remedy=remedy)
        for i, g in enumerate(data):
            if not (isinstance(g, dict) and g.get("name") and g.get("layer") and g.get("catalogPath")):
                raise ConfigError(str(p), f"[{i}]", g, "{ name, layer, enabled, catalogPath } per group")
        return data

    # ---- Argo CD's bootstrap ------------------------------------------------------------------
    def argocd_chart_version(self) -> str | None:
        p = self.path(INSTALL_SCRIPT)
        if not p.is_file():
            return None
        return _shell_assignment(p.read_text(errors="replace"), "CHART_VERSION") or None

    def argocd_values(self) -> dict:
        p = self.path(ARGOCD_VALUES)
        if not p.is_file():
            return {}
        data = load_yaml(p)
        if not isinstance(data, dict):
            raise ConfigError(str(p), "(top level)", type(data).__name__, "a mapping of Helm values")
        return data

    # ---- secrets ------------------------------------------------------------------------------
    def seed_secret_names(self) -> SeedSecretNames:
        p = self.path(SEED_SECRETS_SCRIPT)
        if not p.is_file():
            return SEED_SECRET_DEFAULTS
        text = p.read_text(errors="replace")
        hex_keys = _shell_assignment(text, "HEX_KEYS")
        if not hex_keys:
            return SEED_SECRET_DEFAULTS
        d = SEED_SECRET_DEFAULTS
        return SeedSecretNames(tuple(hex_keys.split()), _shell_assignment(text, "COOKIE_KEY") or d.cookie_key,
                               _shell_assignment(text, "DEX_PASSWORD_KEY") or d.dex_password,
                               _shell_assignment(text, "DEX_HASH_KEY") or d.dex_hash, str(p))

    def secret_store(self) -> dict | None:
        """The ClusterSecretStore the fork holds (rendered by its `make resolve-secret-store`), if any."""
        p = self.path(SECRET_STORE_FILE)
        if not p.is_file():
            return None
        return next((d for d in load_yaml_documents(p)
                     if isinstance(d, dict) and d.get("kind") == "ClusterSecretStore"), None)

    def eso_chart_value(self, dotted: str):
        """One value of the fork's ESO chart values (`serviceAccount.name`), or None."""
        p = self.path(ESO_VALUES)
        node = load_yaml(p) if p.is_file() else None
        for part in dotted.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        return node

    def eso_service_account(self) -> str | None:
        """The Google service account ESO's Kubernetes service account acts as (the Workload Identity
        annotation in the fork's ESO values), if the fork sets one."""
        annotations = self.eso_chart_value("serviceAccount.annotations")
        if not isinstance(annotations, dict):
            return None
        return annotations.get(ESO_GSA_ANNOTATION) or None

    def external_secret_keys(self, repo_url: str, profile: str) -> dict[str, tuple[str, ...]]:
        """Every `remoteRef.key` an ExternalSecret in the fork reads, for the groups enabled in the
        profile's layers: group -> catalog Applications -> their sources in this repository ->
        ExternalSecret manifests there. Key -> the files that read it (relative paths)."""
        layers = set(LAYERS[profile])
        groups = [g for g in self.groups() if str(g.get("enabled")) == "true" and g.get("layer") in layers]
        dirs: set[str] = set()
        for g in groups:
            for app_file in _yaml_files(self.path(str(g["catalogPath"]))):
                for app in load_yaml_documents(app_file):
                    if isinstance(app, dict) and app.get("kind") == "Application":
                        dirs.update(_own_paths(app, repo_url))
        keys: dict[str, set[str]] = {}
        for d in sorted(dirs):
            for f in _yaml_files(self.path(d)):
                for doc in load_yaml_documents(f):
                    if isinstance(doc, dict) and doc.get("kind") == "ExternalSecret":
                        for key in remote_keys(doc):
                            keys.setdefault(key, set()).add(str(f.relative_to(self.root)))
        return {k: tuple(sorted(v)) for k, v in sorted(keys.items())}


def _yaml_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if not path.is_dir():
        return []
    return sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in (".yaml", ".yml")
                  and not p.name.endswith(".example.yaml"))


def _own_paths(app: dict, repo_url: str) -> set[str]:
    spec = app.get("spec") or {}
    sources = spec.get("sources") or ([spec["source"]] if spec.get("source") else [])
    return {str(s["path"]).strip("/") for s in sources if isinstance(s, dict) and s.get("path")
            and _normal_url(str(s.get("repoURL") or "")) == _normal_url(repo_url)}


def remote_keys(es: dict) -> list[str]:
    spec = es.get("spec") or {}
    keys = [((d.get("remoteRef") or {}).get("key")) for d in spec.get("data") or [] if isinstance(d, dict)]
    keys += [((d.get("extract") or {}).get("key")) for d in spec.get("dataFrom") or [] if isinstance(d, dict)]
    return [str(k) for k in keys if k]
