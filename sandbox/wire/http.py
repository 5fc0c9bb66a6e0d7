"""A tiny HTTP/1.1 router shared by every API the sandbox serves.

Each API is a list of `Route`s; the server counts the call, applies injected faults, runs the
simulated controllers, calls the handler under the state lock and renders errors the way that
API's real server does (Google JSON error bodies, or Kubernetes `Status`).
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, Callable
from urllib.parse import parse_qs, urlsplit

from ..core import ApiError

if TYPE_CHECKING:
    from ..core import SandboxContext as Sandbox


@dataclass
class Request:
    method: str
    path: str
    params: dict[str, list[str]]
    body: bytes
    headers: Any
    match: dict[str, str]
    fault: str | None = None

    def param(self, name: str, default: str | None = None) -> str | None:
        values = self.params.get(name)
        return values[0] if values else default

    def json(self) -> Any:
        if not self.body:
            return {}
        try:
            return json.loads(self.body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ApiError(400, f"Invalid JSON payload received. {exc}", reason="BadRequest") from None

    @property
    def int_enums(self) -> bool:
        """Google's Python REST clients ask `$alt=json;enum-encoding=int`; gcloud asks names."""
        return "enum-encoding=int" in (self.param("$alt") or "")

    @property
    def content_type(self) -> str:
        return (self.headers.get("Content-Type") or "").split(";")[0].strip()


@dataclass
class Response:
    status: int = 200
    body: Any = None  # dict/list -> JSON; bytes/str as is
    content_type: str = "application/json"


@dataclass
class Route:
    http_method: str
    pattern: str
    handler: Callable[["Sandbox", Request], Response | dict | list]
    # The API method name faults and counters are keyed by, e.g. "CreateNodePool". It may name
    # the pattern's groups in braces ("list:{plural}"): one generic route then still counts each
    # resource apart, as the Kubernetes face needs for custom resources it cannot list in advance.
    op: str
    mutating: bool = False

    def __post_init__(self):
        self.regex = re.compile("^" + self.pattern + "$")
        self.templated = "{" in self.op

    def op_for(self, match: dict[str, str]) -> str:
        return self.op.format_map(match) if self.templated else self.op


ErrorRenderer = Callable[[ApiError], Response]


def fault_error(kind: str, op: str) -> ApiError:
    if kind == "503":
        return ApiError(503, f"The service is currently unavailable (injected fault on {op}).")
    if kind == "429":
        return ApiError(429, f"Too many requests (injected fault on {op}).", reason="TooManyRequests")
    if kind == "quota":
        return ApiError(403, f"Quota exceeded (injected fault on {op}).", status="RESOURCE_EXHAUSTED")
    return ApiError(503, f"ZONE_RESOURCE_POOL_EXHAUSTED: the zone does not have enough resources "
                         f"available to fulfil the request (injected stockout on {op}).")


class ApiServer:
    """One API on one loopback port."""

    def __init__(self, sandbox: "Sandbox", api: str, routes: list[Route], render_error: ErrorRenderer,
                 port: int, resolve: Callable[[str], tuple[str, dict]] | None = None):
        self.sandbox = sandbox
        self.api = api
        self.routes = routes
        self.render_error = render_error
        # `resolve` lets an API serve several tenants under a path prefix (one per kube cluster):
        # it returns the path to route and extra match values.
        self.resolve = resolve
        handler = self._handler_class()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        # A short poll interval: `stop()` waits up to one interval per server (7 servers x the default
        # 0.5 s made every test's teardown take ~3 s); the idle cost is negligible.
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                       name=f"sandbox-{api}", daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def dispatch(self, method: str, raw_path: str, body: bytes, headers) -> Response:
        url = urlsplit(raw_path)
        params = parse_qs(url.query, keep_blank_values=True)
        path = url.path
        extra: dict[str, str] = {}
        try:
            if self.resolve is not None:
                path, extra = self.resolve(path)
            route, match = self._route(method, path)
            op = route.op_for(match)
            req = Request(method, path, params, body, headers, {**extra, **match})
            sb = self.sandbox
            with sb.store.lock:
                kind = None
                if self.api != "admin":  # the admin API is the test's hand, not a client's call
                    sb.counters.record(self.api, op, route.mutating)
                    kind = sb.faults.take(self.api, op)
                if kind in ("503", "429"):
                    raise fault_error(kind, op)
                req.fault = kind
                sb.reconcile()
                try:
                    result = route.handler(sb, req)
                    if req.fault is not None:
                        # The handler did not turn the fault into an operation error itself.
                        raise fault_error(req.fault, op)
                finally:
                    sb.store.save_if_dirty()
            return result if isinstance(result, Response) else Response(200, result)
        except ApiError as err:
            return self.render_error(err)
        except Exception as exc:  # a bug in a simulation must not take the server down
            return self.render_error(ApiError(500, f"sandbox internal error: {type(exc).__name__}: {exc}"))

    def _route(self, method: str, path: str) -> tuple[Route, dict[str, str]]:
        path_matched = False
        for route in self.routes:
            m = route.regex.match(path)
            if m is None:
                continue
            path_matched = True
            if route.http_method == method:
                return route, m.groupdict()
        if path_matched:
            raise ApiError(405, f"method {method} is not allowed on {path}", reason="MethodNotAllowed")
        raise ApiError(404, f"the requested URL {path} was not found on this server", reason="NotFound")

    def _handler_class(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body leave in two writes; with Nagle's algorithm on, the second waits for
            # the client's delayed ACK (~40 ms), capping a keep-alive client at ~22 calls/s.
            disable_nagle_algorithm = True

            def log_message(self, fmt, *args):  # keep the sandbox's stdout quiet
                return

            def _serve(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                resp = server.dispatch(self.command, self.path, body, self.headers)
                if isinstance(resp.body, (dict, list)):
                    payload = json.dumps(resp.body).encode()
                elif isinstance(resp.body, str):
                    payload = resp.body.encode()
                else:
                    payload = resp.body or b""
                self.send_response(resp.status)
                self.send_header("Content-Type", resp.content_type)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

        return Handler
