"""An opt-in memo of read calls: within one sensor tick, each question goes out once.

Within one environment's observation several pieces ask the same thing (`get_cluster` is read by
cluster, gpu_pool and gpu_stack; `nodes()` by cluster, gpu_pool and the scale-to-zero check), and
environments that share a GCP project ask the same project-wide questions (enabled services,
secret ids). `memoize(conn, answers)` wraps a connection's Google and Kubernetes faces so that a
read with the same arguments, in the same scope, is answered from the first answer (or re-raises
the first error). The scope is the GCP project (Google) or the kubeconfig (Kubernetes), so two
environments share an answer only when they ask the same cloud the same question.

A sensor makes one `Answers` per tick, so nothing stale outlives the tick: the sensor stays
level-based. A cluster's answers (node lists, Argo CD's Applications, ...) are let go as soon as the last
environment observing that cluster is done (`release`): a tick over hundreds of clusters would otherwise
hold every one of them until its end, and the garbage collector scan them over and over. Concurrent
askers of one question wait for the first one's answer (single flight); each connection keeps its own
clients, none is shared between threads. Any other method (a write)
goes through and empties its scope's answers.

Opt-in on purpose: an asset's apply step reads, writes and reads again, and must see its writes.

Once the Kubernetes API is unreachable, every later Kubernetes call of that connection fails at
once with the same error instead of waiting for its own timeout (a black-holed API server would
otherwise cost `request_timeout` per call, per piece).
"""

from __future__ import annotations

import threading
from typing import Any, Callable

from .errors import GpuplatError, KubeUnreachable

# The read methods of `Google` and `Kube` (resources/google.py, resources/kube.py) whose answer is
# a state to observe. Not here on purpose: what is polled until it changes (get_operation,
# running_operations, pod_log), secret values (PASS_THROUGH) and everything that writes.
GOOGLE_READS = frozenset({"get_cluster", "clusters", "enabled_services", "secret_ids", "latest_version",
                          "region_quotas", "project_quotas", "sku_prices"})
# Reads a tick over many environments answers from one list of their scope: `get_cluster(location, name)`
# from `clusters(location)` (GKE's ListClusters, one call for a project's clusters instead of one per
# environment). A name the list lacks, or a list that failed, is asked alone.
LISTED = {"get_cluster": "clusters"}
# A list is worth it when the tick reads most of what it holds: a project's location listed last time with
# more than this many clusters per environment the tick observes there is read by name instead (50
# environments of a project holding 500 clusters parsed all 500 each tick: 0.9 s of the sandbox's CPU and
# twice gpuplat's own, benchmarks/drift_tick.py). Learned per process; a first tick lists to learn.
LIST_AT_MOST = 2.0
_LISTED_SIZES: dict[tuple, int] = {}
KUBE_READS = frozenset({"server_info", "nodes", "pods", "pdbs", "secret_names", "has_kind", "list", "get",
                        "failed_scale_ups"})
# The reads of `Iam` (resources/iam.py): memoized in the same (project) scope as Google's.
IAM_READS = frozenset({"accounts", "account_exists", "policy", "repository"})
# Neither remembered nor emptying the memo: helpers that call nothing, and reads whose answer must
# not be kept (secret values).
PASS_THROUGH = frozenset({"cluster_path", "access_secret", "email", "project_resource", "account_resource",
                          "repository_name"})


class _Slot:
    __slots__ = ("done", "ok", "value")

    def __init__(self):
        self.done = threading.Event()
        self.ok = False
        self.value: Any = None


class Answers:
    """The answers of one tick, per scope; thread-safe, one flight per question."""

    def __init__(self, listing: dict[tuple[str, str], int] | None = None):
        self._lock = threading.Lock()
        self._scopes: dict[Any, dict[tuple, _Slot]] = {}
        self._holders: dict[Any, int] = {}
        # A tick's: how many of its environments are in each (project, location). Where two or more are,
        # reads in LISTED are answered from their scope's list.
        self.listing = listing or {}

    def ask(self, scope: Any, key: tuple, fn: Callable[[], Any]) -> tuple[bool, bool, Any]:
        """(asked, ok, value): `asked` is False when the answer came from an earlier (or parallel) ask."""
        with self._lock:
            slots = self._scopes.setdefault(scope, {})
            slot = slots.get(key)
            asked = slot is None
            if asked:
                slot = slots[key] = _Slot()
        if asked:
            try:
                slot.value, slot.ok = fn(), True
            except Exception as exc:
                slot.value, slot.ok = exc, False
            finally:
                slot.done.set()
        else:
            slot.done.wait()
        return asked, slot.ok, slot.value

    def has(self, scope: Any, key: tuple) -> bool:
        with self._lock:
            return key in self._scopes.get(scope, {})

    def forget(self, scope: Any) -> None:
        with self._lock:
            self._scopes.pop(scope, None)

    def hold(self, scope: Any) -> None:
        with self._lock:
            self._holders[scope] = self._holders.get(scope, 0) + 1

    def release(self, scope: Any) -> None:
        """One holder of `scope` is done; the last one's going forgets its answers (a later asker asks again)."""
        with self._lock:
            left = self._holders.get(scope, 0) - 1
            if left > 0:
                self._holders[scope] = left
            else:
                self._holders.pop(scope, None)
                self._scopes.pop(scope, None)


class Memo:
    """A read-through memo in front of one client object (`Google` or `Kube`), built lazily."""

    def __init__(self, factory: Callable[[], Any], reads: frozenset[str], scope: Any, answers: Answers,
                 sticky: tuple[type, ...] = (), project: str = ""):
        self._factory = factory
        self._project = project
        self._target: Any = None
        self._reads = reads
        self._scope = scope
        self._answers = answers
        self._sticky = sticky
        self._broken: BaseException | None = None
        self.hits = 0
        self.misses = 0

    @property
    def wrapped(self) -> Any:
        if self._target is None:
            self._target = self._factory()
        return self._target

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        value = getattr(self.wrapped, name)
        if not callable(value) or name.startswith("_") or name in PASS_THROUGH:
            return value
        if name in LISTED and self._answers.listing:
            return lambda *args: self._listed(name, value, args)
        if name in self._reads:
            return lambda *args, **kwargs: self._read(name, value, args, kwargs)
        return lambda *args, **kwargs: self._write(value, args, kwargs)

    def _read(self, name: str, fn: Callable, args: tuple, kwargs: dict) -> Any:
        if self._broken is not None:
            raise self._broken
        key = (name, args, tuple(sorted(kwargs.items())))
        try:
            hash(key)
        except TypeError:  # an unhashable argument: ask, do not remember
            return fn(*args, **kwargs)
        asked, ok, answer = self._answers.ask(self._scope, key, lambda: fn(*args, **kwargs))
        if asked:
            self.misses += 1
        else:
            self.hits += 1
        if ok:
            return answer
        if isinstance(answer, self._sticky):
            self._broken = answer
        raise answer

    def _listed(self, name: str, fn: Callable, args: tuple) -> Any:
        """`name(location, key)` from the list `LISTED[name](location)`, keyed by `key`, when this tick
        observes enough of what that list holds; else `name` alone."""
        lister, location = LISTED[name], args[0]
        observed = self._answers.listing.get((self._project, location), 0)
        size = _LISTED_SIZES.get((self._scope, location))
        listed = self._answers.has(self._scope, (lister, args[:-1], ()))  # this tick's list is in hand
        if not listed and (observed < 2 or (size is not None and size > LIST_AT_MOST * observed)):
            return self._read(name, fn, args, {})
        try:
            found = self._read(lister, getattr(self.wrapped, lister), args[:-1], {})
        except GpuplatError:
            found = {}  # a list refused (its own permission) or failed: each asks alone, with its own error
        else:
            _LISTED_SIZES[(self._scope, location)] = len(found)
        if args[-1] in found:
            return found[args[-1]]
        return self._read(name, fn, args, {})

    def _write(self, fn: Callable, args: tuple, kwargs: dict) -> Any:
        if self._broken is not None:
            raise self._broken
        self._answers.forget(self._scope)
        return fn(*args, **kwargs)


def memoize(conn, answers: Answers | None = None) -> Any:
    """Make `conn.google`, `conn.iam` and `conn.kube` memoized; returns `conn` (a `resources.Connection`).

    `answers` shared by several connections (one per environment of a tick) lets environments of
    one GCP project, or one kubeconfig, share their answers; without it the memo is the
    connection's own. Both faces stay lazy: the client (and the sandbox it may start) is built on
    first use, as without the memo.
    """
    answers = answers or Answers()
    cls = type(conn)
    t = conn.target
    google_scope = ("google", t.project, t.sandbox, str(conn.sandbox_state) if t.sandbox else "")
    kube_scope = ("kube", str(conn.kubeconfig_path))
    # Whether the sandbox answers, and where its Argo CD reads the fork, are said once per tick, not once
    # per environment (an HTTP connection each).
    find, git, sandbox = conn.find_sandbox, conn.sandbox_git, ("sandbox", str(conn.sandbox_state))
    conn.find_sandbox = lambda state: _answer(answers.ask(sandbox, ("urls",), lambda: find(state)))
    conn.sandbox_git = lambda url, checkout: _answer(answers.ask(sandbox, ("git", url, str(checkout)),
                                                                 lambda: git(url, checkout)))
    conn.__dict__["google"] = Memo(lambda: cls.google.func(conn), GOOGLE_READS, google_scope, answers,
                                   project=t.project)
    conn.__dict__["iam"] = Memo(lambda: cls.iam.func(conn), IAM_READS, google_scope, answers)
    conn.__dict__["kube"] = Memo(lambda: cls.kube.func(conn), KUBE_READS, kube_scope, answers,
                                 sticky=(KubeUnreachable,))
    answers.hold(kube_scope)
    return conn


def release(conn) -> None:
    """This connection is done with the tick: its cluster's answers go once no other connection holds them,
    and the memo is taken off it (each face's factory refers back to the connection: left on, every
    environment of a tick would be a reference cycle for the garbage collector to find)."""
    memo = conn.__dict__.get("kube")
    if isinstance(memo, Memo):
        memo._answers.release(memo._scope)
    for name in ("google", "iam", "kube", "find_sandbox", "sandbox_git"):
        conn.__dict__.pop(name, None)


def _answer(asked: tuple[bool, bool, Any]) -> Any:
    _, ok, value = asked
    if not ok:
        raise value
    return value


def memo_stats(conn) -> dict[str, int]:
    """Reads answered from the memo and reads that went out, for a memoized connection."""
    out = {"hits": 0, "misses": 0}
    for face in ("google", "iam", "kube"):
        memo = conn.__dict__.get(face)
        if isinstance(memo, Memo):
            out["hits"] += memo.hits
            out["misses"] += memo.misses
    return out
