"""Kubernetes, in gpuplat's words. The only module that imports the kubernetes client.

It loads exactly the one kubeconfig file it is given (`persist_config=False`), never
`~/.kube/config` and never the shell's `KUBECONFIG`: a shared context can silently point at another
cluster, the seed platform's most expensive mistake.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import importlib
import json
import os
import re
import tempfile
import threading
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import Callable

import yaml

from .errors import KindNotServed, KubeApiError, KubeconfigMissing, KubeUnreachable
from .models import KubeIdentity, KubeTarget, NodeState, PdbState, PodState, ScaleUpFailure, ServerInfo, Taint

FIELD_MANAGER = "gpuplat"
ERR_KUBECONFIG_MISSING = "kubeconfig not found"
ERR_UNREACHABLE = "cannot reach the Kubernetes API"


def _status(exc) -> dict:
    """The `Status` object a Kubernetes API error carries ({} when the body is not one)."""
    try:
        body = json.loads(getattr(exc, "body", "") or "")
    except (TypeError, ValueError):
        return {}
    return body if isinstance(body, dict) else {}


_IMPORTED = threading.Event()
_IMPORTING = threading.Lock()


def _import_client() -> None:
    """Import the Kubernetes client on one thread, once. Its package imports itself in a circle
    (kubernetes -> utils -> dynamic.client -> discovery -> kubernetes): two of a drift tick's worker
    threads importing different parts of it at the same moment were handed a half-initialised module
    (`ImportError: cannot import name 'DynamicClient'`), an error finding in a fresh process's first tick."""
    if _IMPORTED.is_set():
        return
    with _IMPORTING:
        for module in ("kubernetes.client", "kubernetes.dynamic"):
            importlib.import_module(module)
        _IMPORTED.set()


def kube_translated(fn):
    """A `Kube` method whose API errors leave it as `KubeApiError` (HTTP status, `Status.reason`)."""

    @functools.wraps(fn)
    def call(self, *args, **kwargs):
        _import_client()
        from kubernetes.client.exceptions import ApiException
        try:
            return fn(self, *args, **kwargs)
        except ApiException as exc:
            status = _status(exc)
            message = status.get("message") or f"{exc.status} {exc.reason}"
            raise KubeApiError(f"Kubernetes API error {exc.status} {status.get('reason') or exc.reason}: "
                               f"{str(message)[:300]}", f"check {self.target.server} and the credentials' RBAC",
                               status=int(exc.status or 0), reason=str(status.get("reason") or "")) from None
    return call


@dataclass(frozen=True)
class Endpoint:
    """A cluster's API reached without reading a kubeconfig (GKE): its URL, its CA and a token source."""

    server: str
    ca_file: str
    token: Callable[[], str]
    context: str
    # Called when the server answers 401 to a token that looked valid (revoked, or a new sandbox).
    invalidate: Callable[[], None] = lambda: None


def read_target(kubeconfig: str) -> KubeTarget:
    """The kubeconfig's current context and server, read from that file only."""
    path = Path(kubeconfig)
    if not path.is_file():
        raise KubeconfigMissing(f"{ERR_KUBECONFIG_MISSING}: {path}",
                                f"put the cluster's kubeconfig at {path} (or point CLUSTER_KUBECONFIG at it); gpuplat "
                                f"never reads ~/.kube/config or KUBECONFIG")
    doc = yaml.safe_load(path.read_text()) or {}
    ctx_name = doc.get("current-context", "")
    ctx = next((c.get("context", {}) for c in doc.get("contexts") or [] if c.get("name") == ctx_name), {})
    cluster = next((c.get("cluster", {}) for c in doc.get("clusters") or [] if c.get("name") == ctx.get("cluster")), {})
    return KubeTarget(kubeconfig=str(path), context=ctx_name, server=cluster.get("server", ""))


def _parse_quantity(q) -> float:
    if q is None:
        return 0.0
    s = str(q)
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9}
    for suffix, factor in units.items():
        if s.endswith(suffix):
            return float(s[: -len(suffix)]) * factor
    return float(s)


class Kube:
    """One cluster's API: from exactly one kubeconfig file, or (GKE) from an `Endpoint` with the
    cluster's CA and a Google token, never reading the kubeconfig written for people."""

    def __init__(self, kubeconfig: str, request_timeout: float = 15.0, endpoint: Endpoint | None = None):
        self.kubeconfig = kubeconfig
        self.request_timeout = request_timeout
        self.endpoint = endpoint

    @cached_property
    def target(self) -> KubeTarget:
        if self.endpoint is not None:
            return KubeTarget(kubeconfig=self.kubeconfig, context=self.endpoint.context, server=self.endpoint.server)
        return read_target(self.kubeconfig)

    @cached_property
    def _shared(self) -> "_SharedClient":
        """This cluster's client. A GKE endpoint's is kept for the process: a drift tick every minute over
        hundreds of clusters reuses each one's connection (no TLS handshake per tick) and its discovery (no
        cache file parsed per tick); a new CA is another client, and the old one of that server is
        dropped. A kubeconfig's client is this object's alone, built anew each time, as before: its
        credentials (a token file, an exec plugin, client certificates) are the kubeconfig's to refresh."""
        self.target  # noqa: B018 - fail with the clear message before the client's own
        if self.endpoint is None:
            return _SharedClient(self._new_api_client())
        ca_path = self.endpoint.ca_file
        ca = Path(ca_path).read_bytes() if ca_path and Path(ca_path).is_file() else b""
        key = ("endpoint", self.endpoint.server, hashlib.sha256(ca).hexdigest())
        with _SHARED_LOCK:
            shared = _SHARED.pop(key, None)
            if shared is not None:
                _SHARED[key] = shared  # the most recently used last: the first is the one to drop
        if shared is None:
            built = _SharedClient(self._new_api_client())  # outside the lock: it may fetch a token
            with _SHARED_LOCK:
                shared = _SHARED.setdefault(key, built)
                stale = [k for k in _SHARED if k[1] == key[1] and k != key]  # that server's earlier CA
                while len(_SHARED) - len(stale) > _SHARED_MAX:
                    stale.append(next(k for k in _SHARED if k not in stale))
                dropped = [_SHARED.pop(k) for k in stale]
            for old in dropped:  # their idle connections closed now, not whenever the collector gets to them
                old.api_client.rest_client.pool_manager.clear()
        ep, cfg = self.endpoint, shared.api_client.configuration
        # This connection's token source from now on (the last one's would do too: both ask Google).
        cfg.refresh_api_key_hook = lambda c: c.api_key.update(BearerToken=ep.token())
        return shared

    @property
    def _api_client(self):
        return self._shared.api_client

    def _new_api_client(self):
        _import_client()
        from kubernetes import client, config
        from urllib3.util.retry import Retry

        cfg = client.Configuration()
        if self.endpoint is not None:
            ep = self.endpoint
            cfg.host, cfg.ssl_ca_cert, cfg.verify_ssl = ep.server, ep.ca_file, True
            # kubernetes 36 reads the bearer token (and its prefix) under "BearerToken".
            cfg.api_key_prefix = {"BearerToken": "Bearer"}
            cfg.api_key = {"BearerToken": ep.token()}
            # Asked before every request: the token source hands back the same token until it expires.
            cfg.refresh_api_key_hook = lambda c: c.api_key.update(BearerToken=ep.token())
        else:
            config.load_kube_config(config_file=self.kubeconfig, client_configuration=cfg, persist_config=False)
        # Transient answers (429, 5xx) are retried with backoff by urllib3, the client's own transport;
        # a connection refused is not: an unreachable cluster should fail fast and say so.
        cfg.retries = Retry(total=6, connect=0, backoff_factor=0.2, status_forcelist=(429, 500, 502, 503, 504),
                            allowed_methods=None, respect_retry_after_header=True, raise_on_status=False)
        return client.ApiClient(cfg)

    @cached_property
    def _core(self):
        from kubernetes import client
        return client.CoreV1Api(self._api_client)

    @property
    def _dynamic(self):
        shared = self._shared
        with shared.lock:
            if shared.dynamic is None:
                shared.dynamic = self._new_dynamic()
            return shared.dynamic

    def _new_dynamic(self):
        from kubernetes.dynamic import DynamicClient
        # Discovery is cached on disk. A cluster recreated at the same address (a resume, a sandbox on a
        # reused port) must not read its predecessor's cache, which would promise CRDs it does not serve:
        # the cache file is per server URL and per cluster CA, which a new cluster never shares.
        ca_path = self._api_client.configuration.ssl_ca_cert
        ca = Path(ca_path).read_bytes() if ca_path and Path(ca_path).is_file() else b""
        key = hashlib.sha256(self.target.server.encode() + b"\0" + ca).hexdigest()[:16]
        cache = Path(tempfile.gettempdir()) / f"gpuplat-discovery-{os.getuid()}-{key}.json"
        try:
            return DynamicClient(self._api_client, cache_file=str(cache))
        except Exception as exc:  # discovery talks to the server: name the target, not the urllib3 error
            raise KubeUnreachable(f"{ERR_UNREACHABLE} at {self.target.server}: {exc}", self._reach_remedy) from None

    @property
    def _reach_remedy(self) -> str:
        return f"check that {self.target.server} is reachable from this host and the credentials are valid"

    def _call(self, fn, *args, **kwargs):
        from kubernetes.client.exceptions import ApiException
        import urllib3
        try:
            try:
                return fn(*args, _request_timeout=self.request_timeout, **kwargs)
            except urllib3.exceptions.HTTPError as exc:
                raise KubeUnreachable(f"{ERR_UNREACHABLE} at {self.target.server}: {type(exc).__name__}",
                                      self._reach_remedy) from None
            except ApiException as exc:
                if exc.status != 401 or self.endpoint is None:
                    raise
            self.endpoint.invalidate()  # one new token, one more try: a refused token is not an outage
            return fn(*args, _request_timeout=self.request_timeout, **kwargs)
        finally:
            # The client keeps the last response it read, body and all; a kept client must not keep a
            # Secret list (values) or a whole node list until its next call.
            shared = self.__dict__.get("_shared")
            if shared is not None:
                shared.api_client.last_response = None

    def _call_json(self, fn, *args, **kwargs) -> dict:
        """`_call` of a read that returns the raw response: the object as the API server sent it, plain
        JSON, without the clients' per-field models or wrappers (which a tick over hundreds of clusters
        would build and unwrap again for every object). The body is read inside `_call`: a connection
        lost halfway is `KubeUnreachable` like any other."""
        return self._call(lambda *a, **k: json.loads(fn(*a, **k).data), *args, **kwargs)

    # ---- reads --------------------------------------------------------------------------------------
    @kube_translated
    def identity(self) -> KubeIdentity:
        """What tells this cluster from another behind the same URL: the kube-system namespace's UID."""
        ns = self._call(self._core.read_namespace, "kube-system")
        return KubeIdentity(server=self.target.server, kube_system_uid=ns.metadata.uid or "")

    @kube_translated
    def server_info(self) -> ServerInfo:
        from kubernetes import client
        v = self._call(client.VersionApi(self._api_client).get_code)
        return ServerInfo(git_version=v.git_version, platform=v.platform)

    @kube_translated
    def nodes(self, label_selector: str = "") -> list[NodeState]:
        # Plain JSON: the typed client would build a model, and parse every timestamp, of each node's
        # whole status (images included) on every tick.
        items = self._call_json(self._core.list_node, label_selector=label_selector,
                                _preload_content=False).get("items") or []
        out = []
        for n in items:
            meta, spec, status = n.get("metadata") or {}, n.get("spec") or {}, n.get("status") or {}
            conds = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
            created = meta.get("creationTimestamp")
            out.append(NodeState(
                name=meta.get("name", ""), provider_id=spec.get("providerID") or "",
                labels=dict(meta.get("labels") or {}), annotations=dict(meta.get("annotations") or {}),
                taints=tuple(Taint(t.get("key", ""), t.get("value") or "", t.get("effect", ""))
                             for t in spec.get("taints") or []),
                allocatable=dict(status.get("allocatable") or {}), unschedulable=bool(spec.get("unschedulable")),
                ready=conds.get("Ready") == "True",
                created=datetime.fromisoformat(created).isoformat() if created else "",
                kernel=(status.get("nodeInfo") or {}).get("kernelVersion") or "",
                capacity=dict(status.get("capacity") or {})))
        return out

    @kube_translated
    def pods(self, field_selector: str = "") -> list[PodState]:
        items = self._call(self._core.list_pod_for_all_namespaces, field_selector=field_selector).items
        return [_pod_state(p) for p in items]

    @kube_translated
    def pdbs(self) -> list[PdbState]:
        from kubernetes import client
        items = self._call(client.PolicyV1Api(self._api_client).list_pod_disruption_budget_for_all_namespaces).items
        return [PdbState(p.metadata.name, p.metadata.namespace,
                         dict((p.spec.selector.match_labels or {}) if p.spec.selector else {}),
                         int((p.status.disruptions_allowed if p.status else 0) or 0)) for p in items]

    @kube_translated
    def secret_names(self, namespace: str | None = None) -> set[tuple[str, str]]:
        if namespace:
            items = self._call(self._core.list_namespaced_secret, namespace).items
        else:
            items = self._call(self._core.list_secret_for_all_namespaces).items
        # Names only: secret values never leave this function.
        return {(s.metadata.namespace, s.metadata.name) for s in items}

    @kube_translated
    def failed_scale_ups(self) -> list[ScaleUpFailure]:
        """The cluster autoscaler's FailedScaleUp events on pods, newest first, with their cause.

        The event carries its cause only in words ("... failed: GCE out of resources.", "... GCE quota
        exceeded", the cluster autoscaler's gce cloud provider), so they are read here, once."""
        # Filtered by the API server (Events select on reason and involvedObject.kind: the event
        # registry's selectable fields): a busy cluster holds thousands of other events.
        events = [e for e in self.list("v1", "Event", field_selector="reason=FailedScaleUp,involvedObject.kind=Pod")
                  if e.get("reason") == "FailedScaleUp"
                  and (e.get("involved_object") or e.get("involvedObject") or {}).get("kind") == "Pod"]
        out = []
        for e in events:
            ref = e.get("involved_object") or e.get("involvedObject") or {}
            message = str(e.get("message") or "")
            said = message.lower()
            cause = ("stockout" if "out of resources" in said or "stockout" in said else
                     "quota" if "quota" in said else "other")
            when = str(e.get("last_timestamp") or e.get("lastTimestamp") or e.get("event_time")
                       or e.get("eventTime") or "")
            out.append(ScaleUpFailure((ref.get("namespace") or "", ref.get("name") or ""), message, cause, when))
        out.sort(key=lambda f: f.when, reverse=True)
        return out

    @kube_translated
    def pod_log(self, namespace: str, name: str) -> str:
        # Raw bytes: the client would json-decode a JSON log line and hand back its Python repr.
        resp = self._call(self._core.read_namespaced_pod_log, name, namespace, _preload_content=False)
        return resp.data.decode("utf-8", errors="replace")

    # ---- generic objects (dynamic client) ------------------------------------------------------------
    def _resource(self, api_version: str, kind: str):
        from kubernetes.dynamic.exceptions import ResourceNotFoundError
        shared = self._shared
        found = shared.found.get((api_version, kind))
        if found is not None:  # discovery's own search walks every group and version: a tick asks ~20 times
            return found
        with shared.lock:  # discovery's cache is the shared client's: one thread at a time reads or fills it
            try:
                found = shared.found[(api_version, kind)] = self._dynamic.resources.get(api_version=api_version,
                                                                                       kind=kind)
                return found
            except ResourceNotFoundError:
                return None

    def _rediscover(self) -> None:
        with self._shared.lock:
            self._shared.found.clear()
            self._dynamic.resources.invalidate_cache()

    @kube_translated
    def has_kind(self, api_version: str, kind: str) -> bool:
        """Whether the API serves this kind (a CRD that is absent is a real 404 in discovery)."""
        if self._resource(api_version, kind) is not None:
            return True
        self._rediscover()
        return self._resource(api_version, kind) is not None

    @kube_translated
    def list(self, api_version: str, kind: str, namespace: str | None = None, label_selector: str = "",
             field_selector: str = "") -> list[dict]:
        def call():
            res = self._resource(api_version, kind)
            # None: a refreshed discovery says the kind is not served after all (a CRD not installed yet).
            return None if res is None else self._call_json(res.get, namespace=namespace,
                                                            label_selector=label_selector or None,
                                                            field_selector=field_selector or None, serialize=False)
        if self._resource(api_version, kind) is None and not self.has_kind(api_version, kind):
            return []
        out = self._fresh(call)
        return [] if out is None else out.get("items") or []

    @kube_translated
    def get(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> dict | None:
        from kubernetes.client.exceptions import ApiException
        if not self.has_kind(api_version, kind):
            return None
        res = self._resource(api_version, kind)
        try:
            # The API client itself, not the dynamic client: an object that is absent is an ordinary
            # answer here, and the dynamic client formats a traceback into every 404 it raises.
            return self._call_json(self._api_client.call_api, res.path(name=name, namespace=namespace), "GET",
                                   header_params={"Accept": "application/json"}, auth_settings=["BearerToken"],
                                   _preload_content=False, _return_http_data_only=True)
        except ApiException as exc:
            if exc.status != 404:
                raise
            if _kind_not_served(exc):  # the discovery cache predates this cluster: ask again
                self._rediscover()
                if self._resource(api_version, kind) is not None:
                    return self.get(api_version, kind, name, namespace)
            return None

    @kube_translated
    def apply(self, body: dict, as_kubectl_would: bool = False) -> dict:
        """Server-side apply as gpuplat's field manager; forced, since gpuplat owns these fields.

        `as_kubectl_would`: for a file people also `kubectl apply`: the object carries the
        last-applied-configuration annotation kubectl would write for the same file, so a later
        `kubectl apply -f` of it changes nothing and `kubectl diff -f` shows nothing."""
        if as_kubectl_would:
            body = with_last_applied(body)
        if not self.has_kind(body["apiVersion"], body["kind"]):
            raise KindNotServed(f"the cluster does not serve {body['kind']} ({body['apiVersion']}): its CRD is absent",
                                "install the CRD first (the asset that owns it runs before this one)")
        ns = body.get("metadata", {}).get("namespace")
        return self._fresh(lambda: self._call(
            self._resource(body["apiVersion"], body["kind"]).server_side_apply, body=body,
            name=body["metadata"]["name"], namespace=ns, field_manager=FIELD_MANAGER, force_conflicts=True)).to_dict()

    def _fresh(self, call):
        """Run `call`; when the server does not serve a type the discovery cache promised (a cluster
        recreated at the same address), refresh discovery and run it once more."""
        from kubernetes.dynamic.exceptions import NotFoundError
        try:
            return call()
        except NotFoundError as exc:
            if not _kind_not_served(exc):
                raise
            self._rediscover()
            return call()

    @kube_translated
    def create(self, body: dict) -> dict:
        res = self._resource(body["apiVersion"], body["kind"])
        return self._call(res.create, body=body, namespace=body.get("metadata", {}).get("namespace")).to_dict()

    @kube_translated
    def merge_patch(self, api_version: str, kind: str, name: str, patch: dict, namespace: str | None = None) -> dict:
        res = self._resource(api_version, kind)
        return self._call(res.patch, body=patch, name=name, namespace=namespace,
                          content_type="application/merge-patch+json").to_dict()

    @kube_translated
    def delete(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> None:
        """Delete one object; one already gone is fine. Only a pause the user approved calls this."""
        from kubernetes.dynamic.exceptions import NotFoundError
        res = self._resource(api_version, kind)
        if res is None:
            return
        try:
            self._call(res.delete, name=name, namespace=namespace)
        except NotFoundError:
            pass

    @kube_translated
    def delete_pod(self, namespace: str, name: str) -> None:
        """Only for gpuplat's own short-lived preflight pods."""
        from kubernetes.client.exceptions import ApiException
        try:
            self._call(self._core.delete_namespaced_pod, name, namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise


LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


def go_json(obj) -> str:
    """JSON as Go's encoding/json Encoder writes it (kubectl's encoder for unstructured objects): keys
    sorted, no spaces, UTF-8 kept, <, > and & escaped, a newline at the end."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    for plain, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"),
                           ("\u2029", "\\u2029")):
        text = text.replace(plain, escaped)
    # Python writes backspace and form feed as \b and \f, Go as \u0008 and \u000c (an escaped
    # backslash before a "b" is not one: count the backslashes).
    return re.sub(r"(?<!\\)((?:\\\\)*)\\([bf])", lambda m: m.group(1) + ("\\u0008" if m.group(2) == "b" else "\\u000c"),
                  text) + "\n"


def with_last_applied(obj: dict) -> dict:
    """`obj` with the annotation `kubectl apply` would write for it (kubectl's GetModifiedConfiguration:
    the object without that annotation, encoded, becomes the annotation)."""
    body = copy.deepcopy(obj)
    meta = body.setdefault("metadata", {})
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k != LAST_APPLIED}
    # kubectl sets the annotation map before encoding, so a file without annotations encodes
    # `"annotations":{}` (seen in the annotation kubectl 1.33 writes).
    meta["annotations"] = annotations
    encoded = go_json(body)
    meta["annotations"] = {**annotations, LAST_APPLIED: encoded}
    return body


def _kind_not_served(exc) -> bool:
    """A 404 for the whole resource type, not for one object: the API server's `Status` names the object
    (`details.name`) only when it is the object that is missing."""
    return not (_status(exc).get("details") or {}).get("name")


@dataclass
class _SharedClient:
    api_client: object
    dynamic: object = None
    lock: threading.RLock = field(default_factory=threading.RLock)
    found: dict = field(default_factory=dict)  # (api_version, kind) -> the served resource discovery found


# GKE clusters' clients kept for the process (Kube._shared), the least recently used dropped first.
_SHARED: dict[tuple, _SharedClient] = {}
_SHARED_LOCK = threading.Lock()
_SHARED_MAX = 1024


def write_private(path: Path, text: str) -> Path:
    """Write a kubeconfig (credentials) atomically, mode 600, and only when it changed: a concurrent
    reader never sees half a file, and an unchanged file keeps its mtime."""
    if path.exists() and path.read_text() == text:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return path


# path -> (what this process last wrote it from, its mtime and size then)
_WRITTEN: dict[str, tuple[object, int, int]] = {}


def write_private_from(path: Path, source, render: Callable[[], str]) -> Path:
    """`write_private(path, render())`, skipped while the file is as this process last left it from the
    same `source`: a tick over hundreds of clusters renders no kubeconfig whose cluster did not move."""
    try:
        st = path.stat()
        if _WRITTEN.get(str(path)) == (source, st.st_mtime_ns, st.st_size):
            return path
    except FileNotFoundError:
        pass
    write_private(path, render())
    st = path.stat()
    _WRITTEN[str(path)] = (source, st.st_mtime_ns, st.st_size)
    return path


def _pod_state(p) -> PodState:
    gpu = 0
    requests: dict[str, float] = {}
    for c in p.spec.containers or []:
        res = c.resources
        req = dict((res.requests or {}) if res else {})
        lim = dict((res.limits or {}) if res else {})
        gpu += int(_parse_quantity(req.get("nvidia.com/gpu") or lim.get("nvidia.com/gpu")))
        for k, v in req.items():
            requests[k] = requests.get(k, 0.0) + _parse_quantity(v)
    volumes = []
    for v in p.spec.volumes or []:
        if v.host_path is not None:
            volumes.append({"name": v.name, "type": "hostPath"})
        elif v.empty_dir is not None:
            volumes.append({"name": v.name, "type": "emptyDir", "medium": v.empty_dir.medium or ""})
    return PodState(
        name=p.metadata.name, namespace=p.metadata.namespace, node=p.spec.node_name or "",
        phase=(p.status.phase if p.status else "") or "", labels=dict(p.metadata.labels or {}),
        annotations=dict(p.metadata.annotations or {}),
        owner_kinds=tuple(o.kind for o in (p.metadata.owner_references or [])),
        priority=int(p.spec.priority or 0), gpu_request=gpu, requests=requests, volumes=tuple(volumes),
        node_selector=dict(p.spec.node_selector or {}), has_affinity=p.spec.affinity is not None,
        tolerations=tuple({"key": t.key, "effect": t.effect} for t in (p.spec.tolerations or [])),
        finished=max((c.state.terminated.finished_at.isoformat() for c in (p.status.container_statuses or [])
                      if p.status and c.state and c.state.terminated and c.state.terminated.finished_at),
                     default="") if p.status else "")
