"""Watches: a list call with `watch=true` streams the changes after a resourceVersion, and stays open.

As kube-apiserver does (https://kubernetes.io/docs/reference/using-api/api-concepts/#efficient-detection-of-changes):
HTTP 200, chunked, one `{"type": ADDED|MODIFIED|DELETED|BOOKMARK|ERROR, "object": ...}` per line,
flushed after each. `resourceVersion` "" or "0" starts with an ADDED event per matching object; a
later one streams the changes after it, and one older than the sandbox's change log answers a single
ERROR event with a 410 Expired Status (clients relist). The stream ends after `timeoutSeconds`
(default 30 minutes) or when the sandbox stops, never after a moment of silence: client-go treats a
watch that closes within a second with no events as "very short watch" and logs a warning.
BOOKMARKs (only with `allowWatchBookmarks=true`) carry just the current resourceVersion, once a
minute. With `as=Table`, each event's object is a one-row Table, column definitions on the first.

Simplification: a change that makes an object stop matching the selector is not turned into a
DELETED event (the real cacher does that); such an event is simply not sent.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Iterator

from ..stores.kube import KubeStore
from ..wire.http import Request, Response
from ..wire.kube import ResourceType
from .kube_select import matcher
from .kube_tables import table, wants_table

if TYPE_CHECKING:
    from ..core import SandboxContext as Sandbox

DEFAULT_TIMEOUT_S = 1800.0
BOOKMARK_EVERY_S = 60.0
# How often a quiet watch lets the simulations run (they otherwise run only before requests).
TICK_S = 0.5


def _line(event: str, obj: dict) -> bytes:
    return json.dumps({"type": event, "object": obj}, separators=(",", ":")).encode() + b"\n"


def _expired(rv: int, floor: int) -> dict:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": f"too old resource version: {rv} ({floor + 1})", "reason": "Expired", "code": 410}


def watch(sb: "Sandbox", req: Request, store: KubeStore, rt: ResourceType, namespace: str | None,
          items: list[dict]) -> Response:
    """`items`: the current matching objects (used when the watch starts from "" or "0")."""
    log = sb.kube_changes(store.cluster_id)
    ok = matcher(rt, req)
    as_table = wants_table(req)
    since = req.param("resourceVersion") or ""
    try:
        timeout = float(req.param("timeoutSeconds") or DEFAULT_TIMEOUT_S)
    except ValueError:
        timeout = DEFAULT_TIMEOUT_S
    bookmarks = (req.param("allowWatchBookmarks") or "").lower() == "true"
    current = int(store.data["rv"])
    if since in ("", "0"):
        first = [("ADDED", obj) for obj in items]
        cursor = current
    else:
        cursor = int(since) if since.isdigit() else 0
        if cursor < log.floor and cursor < current:
            return Response(200, _line("ERROR", _expired(cursor, log.floor)), "application/json")
        first = []
    snapshot = [(event, json.loads(json.dumps(obj))) for event, obj in first]  # the lock is released before use

    def render(event: str, obj: dict, headers: bool) -> bytes:
        if as_table and event != "BOOKMARK":
            obj = table(store, rt, [obj], req, obj["metadata"].get("resourceVersion", ""), headers)
        return _line(event, obj)

    def stream() -> Iterator[bytes]:
        nonlocal cursor
        headers = True
        with sb.store.lock:
            head = [render(event, obj, i == 0) for i, (event, obj) in enumerate(snapshot)]
        if head:
            headers = False
            yield b"".join(head)
        deadline = time.monotonic() + timeout
        last_out = last_tick = time.monotonic()
        while not sb.stopped.is_set() and time.monotonic() < deadline:
            out = []
            with log.cond:
                if time.monotonic() - last_tick >= TICK_S:
                    sb.reconcile((store.cluster_id,))
                    sb.store.save_soon()
                    last_tick = time.monotonic()
                changes = log.since(cursor)
                if not changes:
                    log.cond.wait(TICK_S)
                    changes = log.since(cursor)
                for rv, event, group, plural, ns, text in changes:
                    cursor = rv
                    if (group, plural) != (rt.group, rt.plural) or (namespace and ns != namespace):
                        continue
                    obj = json.loads(text)
                    if ok is None or ok(obj):
                        out.append(render(event, obj, headers))
                        headers = False
                if not out and bookmarks and time.monotonic() - last_out >= BOOKMARK_EVERY_S:
                    out.append(_line("BOOKMARK", {"kind": rt.kind, "apiVersion": rt.api_version,
                                                  "metadata": {"resourceVersion": str(store.data["rv"])}}))
            if out:
                last_out = time.monotonic()
                yield b"".join(out)

    return Response(200, stream(), "application/json")
