"""Where a process's time goes to the cyclic garbage collector: seconds and full collections, from
`gc.callbacks`. A fleet's worth of state (hundreds of clusters' objects) makes each full collection
long; the benchmarks print this for the sandbox and for gpuplat's own process."""

from __future__ import annotations

import gc
import threading
import time


class GcClock:
    """Time spent in collections since this clock started. No lock: collections run one at a time with the
    GIL held, and a lock taken here would deadlock when an allocation under it starts a collection."""

    def __init__(self):
        self.seconds = 0.0
        self.collections = [0, 0, 0]
        self._started = 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        self.seconds += time.perf_counter() - self._started
        self.collections[info["generation"]] += 1

    def snapshot(self) -> dict:
        return {"gc_seconds": round(self.seconds, 4), "collections": list(self.collections),
                "tracked": len(gc.get_objects()), "frozen": gc.get_freeze_count()}


_PROCESS: GcClock | None = None
_PROCESS_LOCK = threading.Lock()


def process_clock() -> GcClock:
    """This process's one clock, started at the first call (`sandbox serve` calls it as it starts)."""
    global _PROCESS
    with _PROCESS_LOCK:
        if _PROCESS is None:
            _PROCESS = GcClock()
        return _PROCESS
