"""The environment config: `environments/<name>/config.yaml`, validated before anything is called.

It accepts the seed platform's own keys (so a fork of that platform can point gpuplat at its
`environments/` tree) plus a `substrate:` block for what the seed kept in its OpenTofu variables.
Defaults follow the seed: cluster `ai-dev` in `us-central1-a`, CPU pool `e2-standard-4` 1..3, GPU
pool `gpu-l4` on `g2-standard-4` with one `nvidia-l4`, 0..1, 100 GB.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from resources.errors import GpuplatError

from .parsed import ParsedFiles

ENVIRONMENTS_VAR = "GPUPLAT_ENVIRONMENTS"
# Set on a run pod by gpuplat_deploy.launcher: the trust zone whose Google credentials the pod holds.
TRUST_ZONE_VAR = "GPUPLAT_TRUST_ZONE"
CLUSTER_KUBECONFIG = "CLUSTER_KUBECONFIG"
CONFIG_FILE = "config.yaml"
ESO_PROVIDER_DOCS = "https://external-secrets.io/latest/provider/"


class _KeyError(ValueError):
    """A rule about one key: carries the key path and the bad value for the message."""

    def __init__(self, key: str, value: Any, allowed: str):
        super().__init__(allowed)
        self.key, self.value, self.allowed = key, value, allowed


class _Strict(BaseModel):
    # A typo'd key must fail loudly: the seed's users copy configs between forks.
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


# GKE's rule for cluster names: lowercase letters, digits and hyphens, a letter first, at most 40.
CLUSTER_NAME = re.compile(r"^[a-z](?:[-a-z0-9]{0,38}[a-z0-9])?$")
# A GCP region (us-central1, northamerica-northeast1) or one of its zones (us-central1-a).
GCP_LOCATION = re.compile(r"^[a-z]+-[a-z]+[0-9]+(?:-[a-z])?$")
# ESO provider names as the seed spells them (`secret_backend`: gcpsm, or a placeholder store the user
# fills for another provider, https://external-secrets.io/latest/provider/).
SECRET_BACKENDS = ("gcpsm", "aws-sm", "aws-ps", "azure-kv", "vault", "openbao", "kubernetes", "akeyless",
                   "onepassword", "bitwarden", "doppler", "infisical", "gitlab", "ibm", "oracle", "fake")


class ClusterRef(_Strict):
    # No default name: a default would let two environments silently share (adopt) one cluster.
    name: str = ""
    projectID: str = ""
    location: str = "us-central1-a"

    @model_validator(mode="after")
    def _name_given(self):
        if not self.name:
            raise _KeyError("name", "", "the cluster's name (required: without it two environments could "
                                        "adopt the same cluster)")
        if not CLUSTER_NAME.match(self.name):
            raise _KeyError("name", self.name, "lowercase letters, digits and hyphens, starting with a letter, "
                                               "at most 40 characters (GKE's cluster name rule)")
        return self


class CpuPool(_Strict):
    # The fork's Terraform (infra/gke/terraform, platform_node_pool_name): adopting a cluster it built
    # must not add a second, paid pool.
    name: str = "default-pool"
    machine_type: str = "e2-standard-4"
    min: int = Field(1, ge=0)
    max: int = Field(3, ge=1)

    @model_validator(mode="after")
    def _min_le_max(self):
        if self.min > self.max:
            raise _KeyError("min", self.min, f"0 <= min <= max (max is {self.max})")
        return self


class GpuPool(_Strict):
    name: str = "gpu-l4"
    machine_type: str = "g2-standard-4"
    accelerator_type: str = "nvidia-l4"
    accelerator_count: int = Field(1, ge=1)
    # Scale-to-zero is the point of this pool: an idle L4 costs money every hour.
    min: int = Field(0, ge=0)
    max: int = Field(1, ge=1)
    disk_size_gb: int = Field(100, ge=10)
    driver_version: Literal["DEFAULT", "LATEST"] = "DEFAULT"
    # Off GKE: how GPU nodes are recognised when they do not (yet) advertise nvidia.com/gpu.
    node_selector: dict[str, str] = Field(default_factory=dict)
    # GKE's autoscaler waits 10 minutes before removing an idle node; 10 more avoids false alarms.
    scale_to_zero_grace_minutes: int = Field(20, ge=1)

    @model_validator(mode="after")
    def _min_le_max(self):
        if self.min > self.max:
            raise _KeyError("min", self.min, f"0 <= min <= max (max is {self.max})")
        return self


class ModelRegistry(_Strict):
    """The Artifact Registry DOCKER repository for OCI modelcars (the fork's `create_modelcar_repo`)."""

    enabled: bool = True
    name: str = "models"
    location: str = ""  # empty: the region of cluster.location


class Alerts(_Strict):
    """Where findings that need a person are sent (substrate/alerts.py): a Slack incoming webhook or any
    endpoint taking JSON. The URL is a credential (a Slack webhook URL is one), so the file names only the
    Secret Manager secret holding it; gpuplat reads its latest version when it sends."""

    kind: Literal["slack", "webhook"] = "slack"
    url_secret: str = Field(pattern=r"^[A-Za-z0-9_-]{1,255}$")
    # The same finding, still open, is sent again after this long without a message about it.
    resend_after_minutes: int = Field(240, ge=1)


class PrivateRepo(_Strict):
    """The seed's `make argocd-repo`: Argo CD's credential for a private fork, kept in the secret backend."""

    # The backend secret holding the token (a fine-grained PAT, Contents: Read-only).
    secret: str = "argocd-repo-pat"
    username: str = "git"
    # Read once, only to create `secret` in Secret Manager when it does not exist yet.
    env: str = "ARGOCD_REPO_PAT"


class Prices(_Strict):
    """Hourly prices off GKE (Hetzner servers, bring-your-own hardware); GKE prices come from the Billing Catalog."""

    gpu_node_per_hour: float | None = None
    currency: str = "EUR"


class Substrate(_Strict):
    kind: Literal["gke", "hetzner", "byo"] = "gke"
    region: str = ""
    release_channel: Literal["RAPID", "REGULAR", "STABLE", "EXTENDED"] = "REGULAR"
    cpu_pool: CpuPool = CpuPool()
    gpu_pool: GpuPool = GpuPool()
    # "": gpuplat's gke-<cluster>-nodes (the fork's node_service_account_id); "default": Compute
    # Engine's default account (the fork's manage_workload_iam = false); or an account's email.
    node_service_account: str = ""
    model_registry: ModelRegistry = ModelRegistry()
    sandbox: bool = False
    # The sandbox costs nothing, so it needs no approval unless a test or demo asks for one.
    require_approval: bool | None = None
    # The environment's own kubeconfig, never ~/.kube/config: a shared context can point anywhere.
    kubeconfig: str = ""
    # An environment variable that names the kubeconfig (the seed's CLUSTER_KUBECONFIG), for this
    # environment only; a layout with a single environment opts in to CLUSTER_KUBECONFIG by itself.
    kubeconfig_env: str = ""
    layer: Literal["platform", "serving", "llm-gateway", "full"] = "platform"
    remediation: Literal["auto", "report"] | None = None
    # A config that moved since the last materialization is a change someone is making (perhaps half-way):
    # the drift sensor shows it and waits for a person, unless this is set (a deployment that reads its
    # fork at a pinned revision, where the config moves only when someone merged it).
    apply_config_changes: bool = False
    # Whose Google credentials its runs hold (gpuplat_deploy.launcher): "" is prod for profile prod,
    # else dev. A run pod of another zone refuses the environment before it reads or calls anything.
    trust_zone: str = Field("", pattern=r"^$|^[a-z][a-z0-9-]{0,30}$")
    storage_class: str = ""
    snapshot_driver: str = ""
    external_secrets: tuple[str, ...] = ("hf-token",)
    prices: Prices = Prices()
    # The image the GPU node preflight pod runs: gpuplat's own (deploy/Dockerfile), which holds the probe.
    probe_image: str = "ghcr.io/example/gpuplat:0.1.0"
    # The platform checkout whose files gpuplat applies (relative to the repository holding
    # environments/); empty: that repository itself, as in a fork of the seed.
    platform_repo: str = ""
    # Overrides CHART_VERSION of the fork's bootstrap/install.sh.
    argocd_chart_version: str = ""
    # Set when the fork is private: Argo CD's repository credential comes from the secret backend.
    private_repo: PrivateRepo | None = None
    # Set to hear about a GPU node burning money, reported drift, a change waiting for approval or a pause
    # that left something billing without opening Dagster.
    alerts: Alerts | None = None
    # The seed pins this chart version of the NVIDIA GPU Operator.
    gpu_operator_version: str = "v26.3.3"


class EnvConfig(_Strict):
    name: str = Field("", exclude=True)
    path: str = Field("", exclude=True)
    cluster: ClusterRef
    repoURL: str = "https://github.com/example/gpu-inference-platform"
    repoBranch: str = "main"
    domain: str = ""
    profile: Literal["cost", "dev", "prod"] = "dev"
    # paused: the paid substrate torn down to $0 (the seed's `make pause`), the secrets kept.
    lifecycle: Literal["running", "paused"] = "running"
    secret_backend: str = "gcpsm"
    secret_store_auth: Literal["workload-identity", "sa-key"] = "workload-identity"
    gpu_stack: Literal["gke-managed", "operator", "none"] = "gke-managed"
    dns: dict[str, Any] = Field(default_factory=dict)
    features: dict[str, Any] = Field(default_factory=dict)
    substrate: Substrate = Substrate()

    @field_validator("secret_backend")
    @classmethod
    def _backend_name(cls, v: str) -> str:
        if v not in SECRET_BACKENDS:
            raise ValueError(f"one of {', '.join(SECRET_BACKENDS)} (gcpsm is seeded by gpuplat; any other is a "
                             f"store whose provider block you fill yourself)")
        return v

    @model_validator(mode="after")
    def _substrate_rules(self):
        sub = self.substrate
        if sub.alerts is not None and self.secret_backend != "gcpsm":
            raise _KeyError("secret_backend", self.secret_backend,
                            "gcpsm while substrate.alerts is set: alerts read their URL from Secret Manager (gpuplat "
                            "does not read other backends)")
        if sub.kind == "gke":
            if not GCP_LOCATION.match(self.cluster.location):
                raise _KeyError("cluster.location", self.cluster.location,
                                "a GCP zone such as us-central1-a or a region such as us-central1")
            if not self.cluster.projectID:
                raise _KeyError("cluster.projectID", "", "a GCP project id (required when substrate.kind is gke)")
            if self.gpu_stack == "operator":
                raise _KeyError("gpu_stack", "operator",
                                "gke-managed or none on GKE: the GPU Operator's nvidia runtime cannot register "
                                "with GKE's containerd, so GKE's node image must provide the driver")
        elif self.lifecycle == "paused":
            raise _KeyError("lifecycle", "paused", f"running on {sub.kind}: gpuplat pauses only a GKE substrate it "
                                                   f"created; stop your own machines with your provider's tools")
        elif self.gpu_stack == "gke-managed":
            raise _KeyError("gpu_stack", "gke-managed",
                            f"operator or none on {sub.kind}: only GKE's node image manages the GPU stack; "
                            f"operator deploys the NVIDIA GPU Operator, none means you bring your own or run CPU-only")
        return self

    # ---- derived facts -------------------------------------------------------------------------
    @property
    def region(self) -> str:
        if self.substrate.region:
            return self.substrate.region
        loc = self.cluster.location
        # A zone (us-central1-a) belongs to the region before its last dash; a region is itself.
        return loc.rsplit("-", 1)[0] if loc.count("-") >= 2 else loc

    @property
    def trust_zone(self) -> str:
        return self.substrate.trust_zone or ("prod" if self.profile == "prod" else "dev")

    def zone_refusal(self, pod_zone: str) -> str:
        """Why a run holding `pod_zone`'s credentials must not touch this environment ("" when it may)."""
        if not pod_zone or pod_zone == self.trust_zone:
            return ""
        return (f"{self.path or self.name}: substrate.trust_zone: environment {self.name!r} is in trust zone "
                f"{self.trust_zone!r}, but this run holds the credentials of zone {pod_zone!r} ({TRUST_ZONE_VAR}); "
                f"allowed: a run of zone {self.trust_zone!r}: add the environment to that zone's patterns in the "
                f"run launcher's trust_zones (deploy/values.yaml), or set substrate.trust_zone")

    @property
    def remediation(self) -> str:
        if self.substrate.remediation:
            return self.substrate.remediation
        return "report" if self.profile == "prod" else "auto"

    @property
    def kubeconfig_env(self) -> str:
        """Which environment variable may name this environment's kubeconfig ("" for none): the one
        the config names, or the seed's CLUSTER_KUBECONFIG in the seed's single-environment layout."""
        if self.substrate.kubeconfig_env or self.is_gke:
            return self.substrate.kubeconfig_env
        folder = Path(self.path).parent.parent if self.path else None
        alone = folder is not None and folder.is_dir() and len(list(folder.glob(f"*/{CONFIG_FILE}"))) == 1
        return CLUSTER_KUBECONFIG if alone else ""

    @property
    def needs_approval(self) -> bool:
        if self.substrate.require_approval is not None:
            return self.substrate.require_approval
        return not self.substrate.sandbox

    @property
    def paused(self) -> bool:
        return self.lifecycle == "paused"

    @property
    def is_gke(self) -> bool:
        return self.substrate.kind == "gke"

    @property
    def gcp_cluster_name(self) -> str:
        return f"projects/{self.cluster.projectID}/locations/{self.cluster.location}/clusters/{self.cluster.name}"


class ConfigError(GpuplatError):
    """One clear message: file, key path (or line), bad value, what is allowed."""

    def __init__(self, path: str, key: str, value: Any, allowed: str, problem: str = "", remedy: str = ""):
        self.path, self.key, self.value, self.allowed, self.problem = path, key, value, allowed, problem
        shown = "(missing)" if value == "" or value is None else repr(value)
        # `problem` replaces "<value> is not allowed" where the file itself is the problem; `remedy`
        # replaces "allowed: ..." where the fix is a command (a file the seed's scripts generate).
        tail = remedy or f"allowed: {allowed}"
        # The message says it all, remedy included: line() adds nothing.
        super().__init__(f"{path}: {key}: {problem or f'{shown} is not allowed'}; {tail}")


def _allowed_keys(model: type[BaseModel], loc: tuple) -> str:
    for part in loc[:-1]:
        field = model.model_fields.get(str(part)) if isinstance(part, str) else None
        if field is None:
            return ""
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            model = ann
        else:
            return ""
    return ", ".join(sorted(k for k, f in model.model_fields.items() if not f.exclude))


def _error_from_validation(path: str, exc: ValidationError) -> ConfigError:
    err = exc.errors(include_url=False)[0]
    loc = tuple(err["loc"])
    ctx_error = (err.get("ctx") or {}).get("error")
    if isinstance(ctx_error, _KeyError):
        # The rule names its key relative to the model it belongs to.
        key = ".".join([*(str(p) for p in loc), ctx_error.key])
        return ConfigError(path, key, ctx_error.value, ctx_error.allowed)
    key = ".".join(str(p) for p in loc) or "(top level)"
    if err["type"] == "extra_forbidden":
        return ConfigError(path, key, err.get("input"), f"one of the known keys: {_allowed_keys(EnvConfig, loc)}")
    if err["type"] == "missing":
        needed = "a mapping with name, projectID and location" if key == "cluster" else "a value"
        return ConfigError(path, key, None, f"{needed} (required)")
    if err["type"] == "literal_error":
        return ConfigError(path, key, err.get("input"), (err.get("ctx") or {}).get("expected", err["msg"]))
    return ConfigError(path, key, err.get("input"), err["msg"].removeprefix("Value error, "))


def parse_config(name: str, path: str, raw: Any) -> EnvConfig:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(path, "(top level)", type(raw).__name__, "a mapping of keys to values")
    try:
        return EnvConfig.model_validate({**raw, "name": name, "path": path})
    except ValidationError as exc:
        raise _error_from_validation(path, exc) from None


# Bounds of a file gpuplat parses: a config or a fork file is a few kilobytes; a file far beyond that,
# or an alias bomb (nine levels of nine aliases expand to 9^9 nodes), must cost its own environment
# one clear error, not every environment's load its time.
MAX_FILE_BYTES = 1 << 20
MAX_NODES = 50_000  # nodes once aliases are expanded
MAX_DEPTH = 64


def _read_text(path: Path) -> str:
    where = str(path)
    try:
        if path.is_dir():
            raise ConfigError(where, "(file)", None, f"a YAML file named {CONFIG_FILE}",
                              problem="is a directory, not a file")
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ConfigError(where, "(file)", None, f"a file of at most {MAX_FILE_BYTES // 1024} KiB",
                              problem=f"is {size / 2**20:.1f} MiB")
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(where, "(file)", None, "a readable file", problem=f"cannot be read ({exc.strerror})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise ConfigError(where, f"line {line}", None, "UTF-8 text (save the file as UTF-8)",
                          problem=f"byte 0x{data[exc.start]:02x} is not UTF-8") from None
    if not text.strip():
        raise ConfigError(where, "(file)", None, "a YAML mapping with at least cluster.name and cluster.projectID",
                          problem="the file is empty")
    return text


def _yaml_error(where: str, exc: yaml.YAMLError) -> ConfigError:
    # An unclosed bracket or quote is noticed lines later (often at the end of the file): the line
    # to fix is where it was opened, which YAML calls the context.
    problem_mark = getattr(exc, "problem_mark", None)
    context_mark = getattr(exc, "context_mark", None)
    mark = context_mark or problem_mark
    line = f"line {mark.line + 1}" if mark else "(unknown line)"
    text = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    if context_mark and problem_mark and context_mark.line != problem_mark.line:
        text = f"{getattr(exc, 'context', '')}: {text} on line {problem_mark.line + 1}"
    return ConfigError(where, line, None, "valid YAML", problem=text)


def _reject_duplicate_keys(where: str, node: yaml.Node, path: tuple[str, ...] = (), budget: list | None = None) -> None:
    """PyYAML keeps the last of two equal keys without a word; a config must say one thing once.

    The walk expands aliases as a reader of the data would, so it also bounds the document: at most
    MAX_NODES nodes and MAX_DEPTH levels, or one error instead of an exponential walk."""
    budget = budget if budget is not None else [MAX_NODES]
    budget[0] -= 1
    if budget[0] < 0:
        raise ConfigError(where, "(file)", None, f"at most {MAX_NODES} values once its aliases are expanded",
                          problem="is too large once its YAML aliases (*name) are expanded")
    if len(path) > MAX_DEPTH:
        raise ConfigError(where, ".".join(path[:3]) + "...", None, f"at most {MAX_DEPTH} levels of nesting",
                          problem="is nested too deeply")
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value)
            if key in seen:
                dotted = ".".join((*path, key))
                raise ConfigError(where, dotted, None, "each key once per mapping",
                                  problem=f"defined twice (line {seen[key] + 1} and line {key_node.start_mark.line + 1})")
            seen[key] = key_node.start_mark.line
            _reject_duplicate_keys(where, value_node, (*path, key), budget)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _reject_duplicate_keys(where, item, (*path, str(i)), budget)


def _compose(where: str, compose):
    """PyYAML composes recursively: a document nested thousands deep is refused, not a RecursionError."""
    try:
        return compose()
    except RecursionError:
        raise ConfigError(where, "(file)", None, f"at most {MAX_DEPTH} levels of nesting",
                          problem="is nested too deeply") from None


# The fork's files and the configs, parsed once per version (substrate/parsed.py); each caller gets its
# own copy, which it may change.
_YAML: ParsedFiles[Any] = ParsedFiles()
_YAML_DOCUMENTS: ParsedFiles[list] = ParsedFiles()


def load_yaml(path: Path) -> Any:
    """A YAML file as data, every problem of the file (not UTF-8, empty, a directory, invalid YAML,
    a key defined twice) as one `ConfigError` naming the file and the line."""
    return copy.deepcopy(_YAML.get(Path(path), _parse_yaml))


def load_yaml_documents(path: Path) -> list[Any]:
    """Every document of a multi-document YAML file (`---`-separated, as `kubectl apply -f` reads
    it), with the same one-line errors as `load_yaml`; an empty file is no documents."""
    return copy.deepcopy(_YAML_DOCUMENTS.get(Path(path), _parse_yaml_documents))


def _parse_yaml(path: Path) -> Any:
    where = str(path)
    text = _read_text(path)
    loader = yaml.SafeLoader(text)
    try:
        node = _compose(where, loader.get_single_node)
        if node is None:
            return None
        _reject_duplicate_keys(where, node)
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise _yaml_error(where, exc) from None
    finally:
        loader.dispose()


def _parse_yaml_documents(path: Path) -> list[Any]:
    where = str(path)
    try:
        text = _read_text(path)
    except ConfigError as exc:
        if exc.problem == "the file is empty":
            return []
        raise
    loader = yaml.SafeLoader(text)
    docs = []
    try:
        while loader.check_node():
            node = _compose(where, loader.get_node)
            _reject_duplicate_keys(where, node)
            docs.append(loader.construct_document(node))
        return docs
    except yaml.YAMLError as exc:
        raise _yaml_error(where, exc) from None
    finally:
        loader.dispose()
