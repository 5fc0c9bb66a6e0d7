"""The sandbox process: one state, one clock, one server per Google API, one endpoint per Kubernetes cluster.

Google's APIs listen on fixed loopback ports (so the Dagster webserver, daemon and run workers of a
project find the same sandbox) or, for tests, on free ones. Each Kubernetes cluster has its own
endpoint, as real clusters do: its own port (chosen once and kept in the state, so kubeconfigs stay
valid across restarts), the API at the root path, HTTPS with the cluster's own CA, and a bearer
token (a Google access token from the fake OAuth server, or the cluster's static admin token).
"""

from __future__ import annotations

import json
import os
import random
import secrets
import tempfile
import threading
from pathlib import Path
from typing import Callable, Iterable

from . import admin
from .admin import gcloud
from .apis import (artifactregistry, billing, compute, gke, iam, kube_objects, oauth, resourcemanager, secretmanager,
                   serviceusage)
from .core import ApiError, Clock, Counters, Faults, StateStore, kube_id_for_gke
from .sims import controllers
from .stores import auth, projects
from .stores import gke as gke_store
from .stores.kube import ChangeLog, KubeStore
from .wire.google import google_error
from .wire.grpc import GrpcServer
from .wire.http import ApiServer, PortInUse, Request
from .wire.kube import render_error
from .wire.tls import ClusterTls

# Fixed default ports of the Google-side APIs and the admin API.
DEFAULT_PORTS = {
    "container": 18461,
    "serviceusage": 18462,
    "secretmanager": 18463,
    "compute": 18464,
    "oauth2": 18465,
    "admin": 18466,
    "billing": 18467,
    "iam": 18468,
    "cloudresourcemanager": 18469,
    "artifactregistry": 18470,
    "iam_grpc": 18471,  # IAM admin over gRPC: its Python client has no REST transport
}
# What tests and `serve --ephemeral-ports` ask for: every API on a free port.
EPHEMERAL_PORTS = {name: 0 for name in DEFAULT_PORTS}
GOOGLE_APIS = {"container": gke.ROUTES, "serviceusage": serviceusage.ROUTES, "secretmanager": secretmanager.ROUTES,
               "compute": compute.ROUTES, "billing": billing.ROUTES, "iam": iam.ROUTES,
               "cloudresourcemanager": resourcemanager.ROUTES, "artifactregistry": artifactregistry.ROUTES}
# Every Google API answers 403 SERVICE_DISABLED for a project that has not enabled it (its project
# from the path; the Billing Catalog's from x-goog-user-project, the caller's quota project).
SERVICES = {"container": "container.googleapis.com", "compute": "compute.googleapis.com",
            "secretmanager": "secretmanager.googleapis.com", "billing": "cloudbilling.googleapis.com"}
SANDBOX_PROJECT = "gpuplat-sandbox"


def _service_guard(service: str):
    def guard(sb, req: Request) -> None:
        project = req.match.get("project") or req.headers.get("x-goog-user-project")
        if project and project != "-":
            projects.require_enabled(sb, project, service)
    return guard
SERVICE_ACCOUNT = f"gpuplat-sandbox@{SANDBOX_PROJECT}.iam.gserviceaccount.com"


class Sandbox:
    def __init__(self, state_dir: str | os.PathLike, ports: dict[str, int] | None = None):
        self.state_dir = Path(state_dir)
        self.store = StateStore(self.state_dir)
        sim = self.store.section("sim")
        self.clock = Clock(sim.get("clock_offset", 0.0))
        self.faults = Faults()
        self.counters = Counters()
        self.controllers: list[Callable[["Sandbox"], None]] = list(controllers.CONTROLLERS)
        self.stopped = threading.Event()
        self.started = False
        # Per kube cluster id ("" for what belongs to none): (state generation, simulated time) of its last pass.
        self._reconciled: dict[str, tuple[int, float]] = {}
        self.reconcile_scope: list[str] | None = None  # the clusters the pass under way is for (sims.util.kube_clusters)
        self._key: dict | None = None
        ports = {**DEFAULT_PORTS, **(ports or {})}
        # Tests ask for free ports (0); clusters created in such a sandbox get free ports too.
        self.ephemeral = all(p == 0 for p in ports.values())
        try:
            self._bind(ports)
        except BaseException:
            self.store.release()  # a sandbox that cannot start must not keep the directory from the next one
            raise

    def _bind(self, ports: dict[str, int]) -> None:
        self.servers: dict[str, ApiServer | GrpcServer] = {
            **{api: ApiServer(self, api, routes, google_error, ports[api],
                              guard=_service_guard(SERVICES[api]) if api in SERVICES else None,
                              scope=_google_scope(api))
               for api, routes in GOOGLE_APIS.items()},
            "oauth2": ApiServer(self, "oauth2", oauth.ROUTES, oauth.oauth_error, ports["oauth2"], scope=lambda req: ()),
            "admin": ApiServer(self, "admin", admin.ROUTES, google_error, ports["admin"], scope=_admin_scope),
        }
        self.servers["iam_grpc"] = GrpcServer(self.servers["iam"], iam.GRPC_SERVICE, iam.GRPC_METHODS, ports["iam_grpc"])
        self.kube_servers: dict[str, ApiServer] = {}
        self._changes: dict[str, ChangeLog] = {}
        with self.store.lock:
            for cid in self.kube_cluster_ids():
                self.serve_kube(cid)
            controllers.bootstrap(self)
            self.store.save_if_dirty()

    # ---- wiring ---------------------------------------------------------------------------------
    def urls(self) -> dict[str, str]:
        return {name: srv.base_url for name, srv in self.servers.items()}

    def kube(self, cluster_id: str) -> KubeStore:
        clusters = self.store.section("kube")
        if cluster_id not in clusters:
            clusters[cluster_id] = {}
            self.store.mark()
        self.serve_kube(cluster_id)
        return KubeStore(self, cluster_id, clusters[cluster_id])

    def drop_kube(self, cluster_id: str) -> None:
        """A deleted cluster: its API goes away with everything in it."""
        srv = self.kube_servers.pop(cluster_id, None)
        if srv is not None and self.started:
            threading.Thread(target=srv.stop, daemon=True).start()  # never wait on ourselves under the lock
        for section in ("kube", "kube_ports"):
            self.store.section(section).pop(cluster_id, None)
        self._changes.pop(cluster_id, None)
        self._reconciled.pop(cluster_id, None)
        self.store.mark()

    def kube_changes(self, cluster_id: str) -> ChangeLog:
        log = self._changes.get(cluster_id)
        if log is None:
            data = self.store.section("kube").get(cluster_id) or {}
            log = self._changes[cluster_id] = ChangeLog(self.store.lock, int(data.get("rv", 1)))
        return log

    def kube_cluster_ids(self) -> list[str]:
        return list(self.store.section("kube").keys())

    def kube_server_url(self, cluster_id: str) -> str:
        return self.serve_kube(cluster_id).base_url

    def kube_endpoint(self, cluster_id: str) -> str:
        """`host:port` of a cluster's API, as GKE's `Cluster.endpoint` holds it."""
        return f"127.0.0.1:{self.serve_kube(cluster_id).port}"

    def kube_ca(self, cluster_id: str) -> str:
        """A cluster's CA certificate, base64 PEM (`masterAuth.clusterCaCertificate`)."""
        return self._tls(cluster_id).ca_base64

    def _tls(self, cluster_id: str) -> ClusterTls:
        return ClusterTls(self.state_dir / "tls" / cluster_id, cluster_id)

    def serve_kube(self, cluster_id: str) -> ApiServer:
        """The cluster's own HTTPS endpoint, started on first use on the port kept in the state."""
        srv = self.kube_servers.get(cluster_id)
        if srv is not None:
            return srv
        kept = self.store.section("kube_ports")
        context = self._tls(cluster_id).server_context()

        def make(port: int) -> ApiServer:
            return ApiServer(self, "kubernetes", kube_objects.ROUTES, render_error, port, match={"cluster": cluster_id},
                             ssl_context=context, authenticate=self._authenticate(cluster_id),
                             scope=lambda req: (cluster_id,))
        srv = None
        if kept.get(cluster_id):
            try:
                srv = make(kept[cluster_id])
            except PortInUse:  # taken since the last run: the cluster moves, as a real endpoint can
                srv = None
        if srv is None:
            srv = _on_a_kube_port(make)
        if kept.get(cluster_id) != srv.port:
            moved = cluster_id in kept
            kept[cluster_id] = srv.port
            if moved:
                self._endpoint_moved(cluster_id, srv.port)
            self.store.mark()
        self.kube_servers[cluster_id] = srv
        if self.started:
            srv.start()
        return srv

    def _endpoint_moved(self, cluster_id: str, port: int) -> None:
        """A GKE cluster whose API moved says so in `Cluster.endpoint`, as GKE's would."""
        key = gke_store.cluster_for_kube(self, cluster_id)
        cl = gke_store.state(self)["clusters"].get(key) if key else None
        if cl is not None and cl.get("endpoint"):
            cl["endpoint"] = f"127.0.0.1:{port}"

    def _authenticate(self, cluster_id: str) -> Callable[[Request], None]:
        def check(req: Request) -> None:
            header = req.headers.get("Authorization") or ""
            token = header[7:].strip() if header[:7].lower() == "bearer " else ""
            with self.store.lock:
                who = auth.principal(self, cluster_id, token)
            if who is None:
                raise ApiError(401, "Unauthorized", reason="Unauthorized")
            req.match["user"] = who
        return check

    def service_account_key(self) -> dict:
        """The sandbox's service-account key (what GOOGLE_APPLICATION_CREDENTIALS would name)."""
        if self._key is None:
            path = self.state_dir / "credentials.json"
            if path.exists():
                self._key = json.loads(path.read_text())
            else:
                from cryptography.hazmat.primitives import serialization
                from cryptography.hazmat.primitives.asymmetric import rsa

                pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
                    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
                self._key = {"type": "service_account", "project_id": SANDBOX_PROJECT,
                             "private_key_id": secrets.token_hex(20), "private_key": pem.decode(),
                             "client_email": SERVICE_ACCOUNT, "client_id": str(10 ** 20 + secrets.randbelow(10 ** 20)),
                             "auth_uri": "https://accounts.google.com/o/oauth2/auth", "token_uri": ""}
        return self._key

    def _write_credentials(self) -> None:
        key = self.service_account_key()
        key["token_uri"] = self.urls()["oauth2"] + "/token"
        _write_private(self.state_dir / "credentials.json", json.dumps(key, indent=2))

    def advance_clock(self, seconds: float) -> float:
        now = self.clock.advance(seconds)
        self.store.section("sim")["clock_offset"] = self.clock.offset
        self.store.mark()
        self.reconcile()
        return now

    def reconcile(self, clusters: Iterable[str] | None = None) -> None:
        """Run the simulated controllers; called under the state lock before each request, for the
        clusters it touches (`clusters`: kube cluster ids; None for all of them).

        A simulation runs for a cluster when someone looks at it (its Kubernetes API, its GKE cluster),
        with the simulated time of that moment: the controllers are level-based (what is due now), so
        running them late gives what running them every second would have. A request that names no
        cluster (IAM, Secret Manager, Service Usage) runs only what belongs to no cluster (GKE's
        operations). So a request costs the same whether the sandbox holds 5 clusters or 500.

        A cluster's pass is skipped when nothing changed since its last one and less than a simulated
        second has passed (the time-driven simulations, such as scale-down windows, work in whole
        seconds). A pass that changed something is followed by another on the next request, until the
        simulations settle.
        """
        now = self.clock.now()
        generation = self.store.generation

        def fresh(key: str) -> bool:
            last = self._reconciled.get(key)
            return last is not None and last[0] == generation and now - last[1] < 1.0

        ids = self.store.section("kube").keys() if clusters is None else clusters
        due = [cid for cid in ids if not fresh(cid)]
        if not due and fresh(""):
            return
        for key in (*due, ""):
            self._reconciled[key] = (generation, now)
        outer = self.store.touching
        self.reconcile_scope = due
        try:
            for controller in self.controllers:
                # What a simulation of no cluster in particular changes (an operation that creates a
                # cluster) may be anywhere.
                self.store.touching = None if controller in controllers.CLUSTERLESS else due
                controller(self)
        finally:
            self.reconcile_scope = None
            self.store.touching = outer

    # ---- lifecycle ------------------------------------------------------------------------------
    def start(self, port_file: str | os.PathLike | None = None) -> None:
        self.started = True
        for srv in (*self.servers.values(), *self.kube_servers.values()):
            srv.start()
        with self.store.lock:
            self._write_credentials()
            gcloud.write_config(self, self.state_dir / "gcloud")
            self.store.save_if_dirty()
        (self.state_dir / "pid").write_text(str(os.getpid()))
        if not self.ephemeral:
            _claim_ports([srv.port for srv in self.servers.values()], self.state_dir)
        if port_file:
            path = Path(port_file)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.urls(), indent=2))
            os.replace(tmp, path)

    def stop(self) -> None:
        for srv in (*self.servers.values(), *self.kube_servers.values()):
            srv.stop()
        with self.store.lock:
            self.store.save_if_dirty()
        self.store.release()
        self.stopped.set()


# Admin requests gpuplat itself makes (a health check, a run's "now", the fork Argo CD reads, every time it
# looks at the platform) and the call counters: no simulation changes what they show, and a pass over a
# fleet's every cluster per environment per tick made a tick quadratic. The test's other hands see all.
_CLUSTERLESS_ADMIN = ("/sandbox/clock", "/sandbox/calls", "/sandbox/calls/reset", "/sandbox/git", "/sandbox/process")


def _admin_scope(req: Request) -> Iterable[str] | None:
    return () if req.path in _CLUSTERLESS_ADMIN else None


def _google_scope(api: str) -> Callable[[Request], Iterable[str] | None] | None:
    """The clusters whose simulations a Google API request looks at (`Sandbox.reconcile`).

    GKE's view of one cluster (its node pools' sizes, its status) is what the simulations of that
    cluster make; a GKE request naming no cluster (list, operations), and Compute Engine (the disks and
    load balancers of every cluster's volumes and Gateways), see them all. The other APIs show nothing a
    cluster's simulation makes."""
    if api == "container":
        def gke_cluster(req: Request) -> Iterable[str] | None:
            m = req.match
            if m.get("cluster") and m.get("project") and m.get("location"):
                return (kube_id_for_gke(m["project"], m["location"], m["cluster"]),)
            return None
        return gke_cluster
    if api == "compute":
        return None
    return lambda req: ()


def _on_a_kube_port(make: Callable[[int], ApiServer]) -> ApiServer:
    """A cluster's API on a free port below the kernel's ephemeral range. A cluster keeps its port across
    restarts (the endpoint and the kubeconfigs name it); ports the kernel hands out for port 0 (every API
    of every other sandbox, every client socket) would take a stopped cluster's port from under it."""
    try:
        first_ephemeral = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        first_ephemeral = 32768
    low, high = 20000, first_ephemeral - 1
    if high - low >= 1000:
        for port in random.sample(range(low, high + 1), 64):
            try:
                return make(port)
            except PortInUse:
                continue
    return make(0)


def _owners_dir() -> Path:
    return Path(tempfile.gettempdir()) / f"gpuplat-sandbox-ports-{os.getuid()}"


def port_owner(port: int) -> str | None:
    """The state directory of the sandbox that listens on `port`, if a sandbox does."""
    try:
        return (_owners_dir() / str(port)).read_text().strip() or None
    except OSError:
        return None


def _claim_ports(ports: list[int], state_dir: Path) -> None:
    """Note which state directory each fixed port belongs to, so a second sandbox can say who holds it."""
    folder = _owners_dir()
    folder.mkdir(parents=True, exist_ok=True)
    for port in ports:
        (folder / str(port)).write_text(str(state_dir.resolve()))


def _write_private(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.chmod(0o600)
    os.replace(tmp, path)
