"""Which process runs a run, and whether it still lives.

A run started from the command line (`dagster asset materialize`, `dagster job execute`) executes in
that command's own process: no run launcher watches it, so when the process is killed (`kill -9`, a
closed laptop) Dagster leaves the run STARTED until `max_runtime_seconds`, and the run queue counts
it against every environment's runs meanwhile. Each run therefore records its worker (host, pid and
the process's start time, which tells a reused pid apart) in the tag `gpuplat/worker` at its first
step; the `dead_runs_sensor` marks a run whose worker is gone as failed.
"""

from __future__ import annotations

import os
import socket
import threading

WORKER_TAG = "gpuplat/worker"

_tagged: set[str] = set()
_lock = threading.Lock()


def process_start(pid: int) -> str:
    """When the process started, in clock ticks since boot (/proc/<pid>/stat field 22); "" if unknown."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode(errors="replace")
    except OSError:
        return ""
    # The command name (field 2) may hold spaces and parentheses: the fields after it follow the last ")".
    fields = stat.rsplit(")", 1)[-1].split()
    return fields[19] if len(fields) > 19 else ""


def this_worker() -> str:
    pid = os.getpid()
    return f"{socket.gethostname()}:{pid}:{process_start(pid)}"


def parse(worker: str) -> tuple[str, int, str] | None:
    try:
        host, pid, started = worker.rsplit(":", 2)
        return host, int(pid), started
    except ValueError:
        return None


def alive(worker: str) -> bool | None:
    """Whether the worker process still runs: None when it is on another host (not ours to judge)."""
    parsed = parse(worker)
    if parsed is None:
        return None
    host, pid, started = parsed
    if host != socket.gethostname():
        return None
    now = process_start(pid)
    return bool(now) and (not started or now == started)


def pid_alive(pid: int) -> bool:
    return bool(process_start(pid))


def tag_run(instance, run_id: str, tags: dict) -> None:
    """Record this process as the run's worker, once per run."""
    if tags.get(WORKER_TAG):
        return
    with _lock:
        if run_id in _tagged:
            return
        _tagged.add(run_id)
    instance.add_run_tags(run_id, {WORKER_TAG: this_worker()})
