"""The sandbox process: one state, one clock, one server per API on loopback."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Callable

from . import admin
from .apis import billing, compute, gke, kube_objects, secretmanager, serviceusage
from .core import Clock, Counters, Faults, StateStore
from .sims import controllers
from .stores.kube import KubeStore
from .wire.google import google_error
from .wire.http import ApiServer
from .wire.kube import render_error, resolve_cluster_path

# Fixed default ports, so the Dagster webserver, daemon and run workers of one project find the
# same sandbox; tests pass ephemeral ports instead.
DEFAULT_PORTS = {
    "container": 18461,
    "serviceusage": 18462,
    "secretmanager": 18463,
    "compute": 18464,
    "kubernetes": 18465,
    "admin": 18466,
    "billing": 18467,
}


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
        self._reconciled: tuple[int, float] | None = None  # (state generation, simulated time) of the last pass
        ports = {**DEFAULT_PORTS, **(ports or {})}
        self.servers: dict[str, ApiServer] = {
            "container": ApiServer(self, "container", gke.ROUTES, google_error, ports["container"]),
            "serviceusage": ApiServer(self, "serviceusage", serviceusage.ROUTES, google_error, ports["serviceusage"]),
            "secretmanager": ApiServer(self, "secretmanager", secretmanager.ROUTES, google_error,
                                       ports["secretmanager"]),
            "compute": ApiServer(self, "compute", compute.ROUTES, google_error, ports["compute"]),
            "billing": ApiServer(self, "billing", billing.ROUTES, google_error, ports["billing"]),
            "kubernetes": ApiServer(self, "kubernetes", kube_objects.ROUTES, render_error, ports["kubernetes"],
                                    resolve=resolve_cluster_path),
            "admin": ApiServer(self, "admin", admin.ROUTES, google_error, ports["admin"]),
        }
        with self.store.lock:
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
        return KubeStore(self, cluster_id, clusters[cluster_id])

    def kube_cluster_ids(self) -> list[str]:
        return list(self.store.section("kube").keys())

    def kube_server_url(self, cluster_id: str) -> str:
        return f"{self.servers['kubernetes'].base_url}/clusters/{cluster_id}"

    def advance_clock(self, seconds: float) -> float:
        now = self.clock.advance(seconds)
        self.store.section("sim")["clock_offset"] = self.clock.offset
        self.store.mark()
        self.reconcile()
        return now

    def reconcile(self) -> None:
        """Run every simulated controller once; called under the state lock before each request.

        A pass is skipped when nothing changed since the last one and less than a simulated second
        has passed (the time-driven simulations, such as scale-down windows, work in whole seconds):
        otherwise every read would re-run every simulation over every cluster, and a sandbox holding
        50 clusters would spend most of each request there. A pass that changed something is followed
        by another on the next request, until the simulations settle.
        """
        now = self.clock.now()
        generation = self.store.generation
        if self._reconciled is not None and self._reconciled[0] == generation and now - self._reconciled[1] < 1.0:
            return
        self._reconciled = (generation, now)
        for controller in self.controllers:
            controller(self)

    # ---- lifecycle ------------------------------------------------------------------------------
    def start(self, port_file: str | os.PathLike | None = None) -> None:
        for srv in self.servers.values():
            srv.start()
        (self.state_dir / "pid").write_text(str(os.getpid()))
        if port_file:
            path = Path(port_file)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.urls(), indent=2))
            os.replace(tmp, path)

    def stop(self) -> None:
        for srv in self.servers.values():
            srv.stop()
        with self.store.lock:
            self.store.save_if_dirty()
        self.stopped.set()
