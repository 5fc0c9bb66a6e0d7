"""An opt-in memo of read calls for one `Connection`: a sensor tick asks each question once.

Within one environment's observation several pieces ask the same thing (`get_cluster` is read by
cluster, gpu_pool and gpu_stack; `nodes()` by cluster, gpu_pool and the scale-to-zero check).
`memoize(conn)` wraps the connection's Google and Kubernetes faces so that each read with the same
arguments is answered from the first answer (or re-raises the first error) for the connection's
lifetime. A sensor builds one connection per environment per tick, so nothing stale outlives the
tick: the sensor stays level-based. Any other method (a write) goes through and empties the memo.

Opt-in on purpose: an asset's apply step reads, writes and reads again, and must see its writes.

Once the Kubernetes API is unreachable, every later Kubernetes call of that connection fails at
once with the same error instead of waiting for its own timeout (a black-holed API server would
otherwise cost `request_timeout` per call, per piece).
"""

from __future__ import annotations

from typing import Any, Callable

from .kube import KubeUnreachable

# The read methods of `Google` and `Kube` (resources/google.py, resources/kube.py) whose answer is
# a state to observe. Not here on purpose: what is polled until it changes (get_operation,
# running_operations, pod_log) and everything that writes.
GOOGLE_READS = frozenset({"get_cluster", "enabled_services", "secret_ids", "region_quotas", "project_quotas",
                          "compute_sku_prices"})
KUBE_READS = frozenset({"server_info", "nodes", "pods", "pdbs", "secret_names", "has_kind", "list", "get"})
# Helpers that call nothing: they neither use nor empty the memo.
LOCAL = frozenset({"cluster_path"})


class Memo:
    """A read-through memo in front of one client object (`Google` or `Kube`), built lazily."""

    def __init__(self, factory: Callable[[], Any], reads: frozenset[str], sticky: tuple[type, ...] = ()):
        self._factory = factory
        self._target: Any = None
        self._reads = reads
        self._sticky = sticky
        self._answers: dict[tuple, tuple[bool, Any]] = {}
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
        if not callable(value) or name.startswith("_") or name in LOCAL:
            return value
        if name in self._reads:
            return lambda *args, **kwargs: self._read(name, value, args, kwargs)
        return lambda *args, **kwargs: self._write(value, args, kwargs)

    def _read(self, name: str, fn: Callable, args: tuple, kwargs: dict) -> Any:
        if self._broken is not None:
            raise self._broken
        key = (name, args, tuple(sorted(kwargs.items())))
        try:
            hit = self._answers.get(key)
        except TypeError:  # an unhashable argument: ask, do not remember
            return fn(*args, **kwargs)
        if hit is not None:
            self.hits += 1
            ok, answer = hit
            if ok:
                return answer
            raise answer
        self.misses += 1
        try:
            answer = fn(*args, **kwargs)
        except Exception as exc:
            self._answers[key] = (False, exc)
            if isinstance(exc, self._sticky):
                self._broken = exc
            raise
        self._answers[key] = (True, answer)
        return answer

    def _write(self, fn: Callable, args: tuple, kwargs: dict) -> Any:
        if self._broken is not None:
            raise self._broken
        self._answers.clear()
        return fn(*args, **kwargs)


def memoize(conn) -> Any:
    """Make `conn.google` and `conn.kube` memoized for this connection's lifetime; returns `conn`.

    Both stay lazy: the client (and the sandbox it may start) is built on first use, as without
    the memo. `conn` is a `resources.Connection`.
    """
    cls = type(conn)
    conn.__dict__["google"] = Memo(lambda: cls.google.func(conn), GOOGLE_READS)
    conn.__dict__["kube"] = Memo(lambda: cls.kube.func(conn), KUBE_READS, sticky=(KubeUnreachable,))
    return conn


def memo_stats(conn) -> dict[str, int]:
    """Reads answered from the memo and reads that went out, for a memoized connection."""
    out = {"hits": 0, "misses": 0}
    for face in ("google", "kube"):
        memo = conn.__dict__.get(face)
        if isinstance(memo, Memo):
            out["hits"] += memo.hits
            out["misses"] += memo.misses
    return out
