"""The sandbox's bottom layer: errors, simulated clock, faults, call counters, persisted state.

Nothing here imports another sandbox module. `SandboxContext` is what every layer above sees of
the running sandbox (its state, clock and per-cluster Kubernetes stores): the handlers of the APIs
are typed against it, so they never import the app that wires them together.
"""

from __future__ import annotations

import copy
import fcntl
import fnmatch
import json
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Protocol
from urllib.parse import quote, unquote

# Google's canonical error codes, as the REST transport reports them in `error.status`.
GOOGLE_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ALREADY_EXISTS",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}

# "concurrent-change": another writer changes the IAM policy between the caller's read and its write.
# "500": an internal error before anything is done. "timeout": the answer is held `seconds` (default 70)
# before it is given, longer than a client waits. "lost": the call is carried out and its answer lost
# (the connection drops): the real world's worst case for a create, which the caller cannot tell from
# one that never arrived.
# "busy": GKE refuses a change because another operation (an upgrade begun a moment ago) runs on the
# cluster: 400 FAILED_PRECONDITION in GKE's words.
FAULT_KINDS = ("503", "429", "500", "quota", "stockout", "concurrent-change", "slow", "timeout", "lost", "busy",
               "denied")
TIMEOUT_FAULT_S = 70.0


def kube_id_for_gke(project: str, location: str, cluster: str) -> str:
    """The sandbox Kubernetes cluster behind a GKE cluster (named like gcloud's kube context)."""
    return f"gke_{project}_{location}_{cluster}"


def gke_for_kube_id(kube_id: str) -> str | None:
    """The GKE resource name projects/P/locations/L/clusters/C a kube cluster id `gke_P_L_C` names (none of a
    project id, location or cluster name holds an underscore); None for a cluster that is not GKE's."""
    parts = kube_id.split("_", 3)
    if len(parts) == 4 and parts[0] == "gke":
        return f"projects/{parts[1]}/locations/{parts[2]}/clusters/{parts[3]}"
    return None


class ApiError(Exception):
    """An error the sandbox answers with, rendered in the style of the API that raised it."""

    def __init__(self, code: int, message: str, status: str | None = None, reason: str | None = None,
                 details: list[dict] | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status or GOOGLE_STATUS.get(code, "UNKNOWN")
        # Kubernetes `Status.reason` (NotFound, AlreadyExists, Conflict, ...).
        self.reason = reason
        # Google's `error.details` (ErrorInfo, Help, ...), for the errors whose details clients read.
        self.details = details


class Clock:
    """Simulated time: wall time plus an offset that the admin API can advance.

    Simulated controllers (operations, scale-down windows) read this clock, so tests can skip
    minutes without sleeping.
    """

    def __init__(self, offset: float = 0.0):
        self.offset = offset

    def now(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> float:
        self.offset += float(seconds)
        return self.now()

    def rfc3339(self, t: float | None = None) -> str:
        t = self.now() if t is None else t
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


@dataclass
class FaultRule:
    """The next `remaining` calls whose API and method match fail with `kind`."""

    api: str
    method: str
    kind: str
    remaining: int
    seconds: float = 0.0  # how long a `timeout` fault holds the answer (0: TIMEOUT_FAULT_S)

    def matches(self, api: str, method: str) -> bool:
        return fnmatch.fnmatchcase(api, self.api) and fnmatch.fnmatchcase(method, self.method)


@dataclass
class Faults:
    rules: list[FaultRule] = field(default_factory=list)

    def add(self, api: str, method: str, kind: str, count: int, seconds: float = 0.0) -> FaultRule:
        if kind not in FAULT_KINDS:
            raise ApiError(400, f"fault kind {kind!r} is not one of {', '.join(FAULT_KINDS)}")
        if count < 1:
            raise ApiError(400, f"fault count must be >= 1, got {count}")
        if seconds < 0:
            raise ApiError(400, f"fault seconds must be >= 0, got {seconds}")
        rule = FaultRule(api=api, method=method, kind=kind, remaining=int(count), seconds=float(seconds))
        self.rules.append(rule)
        return rule

    def take(self, api: str, method: str) -> FaultRule | None:
        """Consume one matching fault, oldest first; return it (its kind and seconds) or None."""
        for rule in self.rules:
            if rule.remaining > 0 and rule.matches(api, method):
                rule.remaining -= 1
                taken = FaultRule(rule.api, rule.method, rule.kind, 1, rule.seconds)
                self.rules = [r for r in self.rules if r.remaining > 0]
                return taken
        return None

    def to_json(self) -> list[dict]:
        return [vars(r).copy() for r in self.rules]


class Counters:
    """Calls received per API, split into reads and mutating calls (faulted calls included)."""

    def __init__(self):
        self.by_api: dict[str, dict[str, Any]] = {}

    def record(self, api: str, method: str, mutating: bool) -> None:
        entry = self.by_api.setdefault(api, {"read": 0, "mutate": 0, "methods": {}})
        entry["mutate" if mutating else "read"] += 1
        entry["methods"][method] = entry["methods"].get(method, 0) + 1

    def snapshot(self) -> dict:
        out = copy.deepcopy(self.by_api)
        out["_total"] = {
            "read": sum(v["read"] for v in self.by_api.values()),
            "mutate": sum(v["mutate"] for v in self.by_api.values()),
        }
        return out

    def reset(self) -> None:
        self.by_api = {}


class StateDirInUse(RuntimeError):
    """Another sandbox process serves this state directory."""


# How long a change waits to be written (StateStore.save_soon).
SAVE_DELAY_S = 0.25
# How long state.json may wait when only clusters' simulations changed (a GKE pool's node count with its
# nodes): at most this much of such changes is lost to a sandbox killed outright.
MAIN_SAVE_S = 2.0


class StateStore:
    """The fake cloud's state as JSON: each Kubernetes cluster in a file of its own (`kube/<id>.json`),
    everything else in `state.json`; written off the request path after each change (`save_soon`).

    One lock serialises every request, so two clients working at once always see a consistent
    state; the requests are small, so the lock is not what limits throughput. One process owns a
    state directory (an exclusive `flock` on `serve.lock`, held until `release`): a second sandbox on
    the same directory would keep its own copy of the state and overwrite the first's changes.

    A save writes the clusters changed since the last one, not all of them: a change is charged to the
    clusters of the work under way (`touching`, set by the request and by each simulation pass), or to
    every cluster when that is not known. `state.json` is written with them when the change was not a
    cluster's (a request naming none, or not known), else within MAIN_SAVE_S: a cluster's simulations
    seldom change it (a pool's node count), and it holds every GKE cluster. As one document, every save
    of a 500-cluster state encoded 34 MB while holding the lock, and a fleet's drift tick spent a third
    of the sandbox's time there.
    """

    def __init__(self, state_dir: Path):
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._owner = open(self.state_dir / "serve.lock", "a+")
        try:
            fcntl.flock(self._owner, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._owner.seek(0)
            pid = self._owner.read().strip() or "?"
            self._owner.close()
            raise StateDirInUse(f"another sandbox (pid {pid}) already serves {self.state_dir}; use it, or stop it "
                                f"first: python -m sandbox stop --state-dir {self.state_dir}") from None
        self._owner.truncate(0)
        self._owner.write(str(os.getpid()))
        self._owner.flush()
        self.path = self.state_dir / "state.json"
        self.kube_dir = self.state_dir / "kube"
        self.lock = threading.RLock()
        self.dirty = False
        # The clusters changes are charged to now (None: not known, so all of them), and those changed
        # since the last save.
        self.touching: Iterable[str] | None = None
        self._dirty_clusters: set[str] = set()
        self._dirty_all = False
        self._main_dirty = False
        self._main_saved = time.monotonic()
        self._saver: threading.Thread | None = None
        self._save_wanted = threading.Event()
        self._closed = threading.Event()
        # Counts every change, so the simulated controllers can tell that nothing happened since.
        self.generation = 0
        self.data: dict[str, Any] = {}
        if self.path.exists():
            self.data = json.loads(self.path.read_text())
        # A state written as one document (before the per-cluster files) moves to them on its first save.
        self._dirty_all = "kube" in self.data
        clusters = self.data.setdefault("kube", {})
        for cid, f in self._saved_clusters().items():
            clusters.setdefault(cid, json.loads(f.read_text()))

    def _saved_clusters(self) -> dict[str, Path]:
        """Cluster id -> its file under kube/ (the name is the id, percent-quoted)."""
        return {unquote(f.name[:-5]): f for f in self.kube_dir.glob("*.json")} if self.kube_dir.is_dir() else {}

    def section(self, name: str) -> dict:
        return self.data.setdefault(name, {})

    def release(self) -> None:
        """Give the state directory up (the sandbox stopped): another sandbox may serve it now."""
        self._closed.set()  # the saver thread ends; what stop() wrote is the last state
        self._save_wanted.set()
        if not self._owner.closed:
            fcntl.flock(self._owner, fcntl.LOCK_UN)
            self._owner.close()

    def mark(self) -> None:
        self.dirty = True
        self.generation += 1
        if self.touching is None:
            self._dirty_all = True
        elif not self.touching:  # a request that names no cluster: what it changed is in state.json
            self._main_dirty = True
        else:
            self._dirty_clusters.update(self.touching)

    def save_if_dirty(self, main_may_wait: bool = False) -> None:
        """Write the state now (the caller holds the lock): at start and stop, and from the saver thread,
        which lets state.json wait up to MAIN_SAVE_S after a change charged to clusters (it stays dirty)."""
        if not self.dirty:
            return
        clusters = self.section("kube")
        self.kube_dir.mkdir(exist_ok=True)
        changed = set(clusters) if self._dirty_all else self._dirty_clusters
        if self._dirty_all:
            changed |= set(self._saved_clusters())
        for cid in changed:
            path = self.kube_dir / f"{quote(cid, safe='')}.json"
            if cid in clusters:
                _write_atomically(path, json.dumps(clusters[cid], separators=(",", ":")))
            else:  # a deleted cluster
                path.unlink(missing_ok=True)
        self._dirty_clusters = set()
        main_now = self._dirty_all or self._main_dirty or not main_may_wait
        if main_now or time.monotonic() - self._main_saved >= MAIN_SAVE_S:
            _write_atomically(self.path, json.dumps({k: v for k, v in self.data.items() if k != "kube"},
                                                    separators=(",", ":")))
            self._main_saved = time.monotonic()
            self.dirty = self._dirty_all = self._main_dirty = False

    def save_soon(self) -> None:
        """Have the state written within SAVE_DELAY_S (state.json, after a change charged to clusters, within
        MAIN_SAVE_S), off the request path: written after every request, a read-only sensor tick over 50
        clusters spent a seventh of the sandbox's time encoding it. A stop writes what is pending, so an
        orderly restart loses nothing; a process killed outright loses at most that much of its changes."""
        if not self.dirty:
            return
        if self._saver is None:
            self._saver = threading.Thread(target=self._save_loop, name="sandbox-state-saver", daemon=True)
            self._saver.start()
        self._save_wanted.set()

    def _save_loop(self) -> None:
        while not self._closed.is_set():
            self._save_wanted.wait()
            self._save_wanted.clear()
            if self._closed.wait(SAVE_DELAY_S):
                return
            with self.lock:
                self.save_if_dirty(main_may_wait=True)
                waiting = self.dirty  # state.json, within MAIN_SAVE_S
            if waiting:
                self._save_wanted.set()


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class SandboxContext(Protocol):
    """The running sandbox as the layers above `core` see it (implemented by `app.Sandbox`)."""

    store: StateStore
    clock: Clock
    faults: Faults
    counters: Counters
    stopped: threading.Event

    def kube(self, cluster_id: str) -> Any:
        """The `stores.kube.KubeStore` of one cluster."""

    def kube_cluster_ids(self) -> list[str]: ...

    def kube_server_url(self, cluster_id: str) -> str: ...

    def drop_kube(self, cluster_id: str) -> None:
        """Remove a cluster's Kubernetes API and state (its GKE cluster was deleted)."""

    def kube_changes(self, cluster_id: str) -> Any:
        """The `stores.kube.ChangeLog` of one cluster (what watches stream)."""

    def kube_endpoint(self, cluster_id: str) -> str:
        """`host:port` of the cluster's own API endpoint (started on first use)."""

    def kube_ca(self, cluster_id: str) -> str:
        """The cluster's CA certificate, base64 PEM."""

    def service_account_key(self) -> dict:
        """The sandbox's service-account key, as a credentials.json holds it."""

    def reconcile(self, clusters: Any = None) -> None:
        """Run the simulated controllers once for `clusters` (kube cluster ids; None: all of them); a
        handler that made something due asks for it."""

    def advance_clock(self, seconds: float) -> float: ...

    def urls(self) -> dict[str, str]: ...
