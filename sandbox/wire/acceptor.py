"""One thread accepts the connections of every API server of the process.

A sandbox serves each cluster's Kubernetes API on its own port. With a `serve_forever` thread per
port, a sandbox holding 500 clusters ran 500 threads that each woke 20 times a second to look for a
shutdown request, and the GIL they took kept every request waiting (a health check answered in more
than 2 s, and the runs that asked for one started a second sandbox). Here one selector watches every
listening socket and hands a connection to its server, which serves it on a thread of its own as
before (`ThreadingHTTPServer`); adding or removing a server wakes the selector at once.
"""

from __future__ import annotations

import os
import selectors
import socket
import socketserver
import threading


class Acceptor:
    def __init__(self):
        self._lock = threading.Lock()
        self._pid = -1
        self._changes: list[tuple[socketserver.BaseServer, bool, threading.Event]] = []

    def add(self, server: socketserver.BaseServer) -> None:
        """Start accepting `server`'s connections (its `timeout` becomes 0: it is asked only when ready)."""
        server.timeout = 0
        self._change(server, True)

    def remove(self, server: socketserver.BaseServer) -> None:
        """Stop accepting for `server` (not added, or removed already: nothing happens); returns once no
        new connection of it will be accepted."""
        self._change(server, False)

    def _change(self, server: socketserver.BaseServer, add: bool) -> None:
        done = threading.Event()
        with self._lock:
            if self._pid != os.getpid():  # first use, or a forked child: the parent's thread is not here
                self._start()
            self._changes.append((server, add, done))
            self._wake_w.send(b"x")
        done.wait()

    def _start(self) -> None:
        self._pid = os.getpid()
        self._changes = []
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        threading.Thread(target=self._loop, args=(self._selector, self._wake_r), name="sandbox-accept",
                         daemon=True).start()

    def _loop(self, selector: selectors.BaseSelector, wake: socket.socket) -> None:
        while True:
            for key, _ in selector.select():
                if key.fileobj is wake:
                    try:
                        wake.recv(4096)
                    except BlockingIOError:
                        pass
                    self._apply(selector)
                elif key.fd in selector.get_map():  # not removed by a change applied in this round
                    key.fileobj.handle_request()  # ready: accepts without waiting (timeout 0)

    def _apply(self, selector: selectors.BaseSelector) -> None:
        with self._lock:
            changes, self._changes = self._changes, []
        for server, add, done in changes:
            if add:
                selector.register(server, selectors.EVENT_READ)
            else:
                try:
                    selector.unregister(server)
                except (KeyError, ValueError):
                    pass
            done.set()


ACCEPTOR = Acceptor()
