"""A tiny HTTP/1.1 router shared by every API the sandbox serves.

Each API is a list of `Route`s; the server counts the call, applies injected faults, runs the
simulated controllers, calls the handler under the state lock and renders errors the way that
API's real server does (Google JSON error bodies, or Kubernetes `Status`).
"""

from __future__ import annotations

import errno
import json
import re
import ssl
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator
from urllib.parse import parse_qs, urlsplit

from ..core import TIMEOUT_FAULT_S, ApiError
from .acceptor import ACCEPTOR

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
    # The call was carried out and its answer is lost: the server drops the connection instead (the
    # `lost` fault); over gRPC the client sees UNAVAILABLE.
    lost: bool = False


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
    if kind == "500":
        return ApiError(500, f"Internal error encountered (injected fault on {op}).")
    if kind == "busy":  # hashicorp/terraform-provider-google#3650
        return ApiError(400, f"Operation operation-{int(time.time() * 1000)}-injected is currently upgrading cluster "
                             f"(injected fault on {op}). Please wait and try again once it is done.",
                        status="FAILED_PRECONDITION")
    if kind == "429":
        return ApiError(429, f"Too many requests (injected fault on {op}).", reason="TooManyRequests")
    if kind == "quota":
        return ApiError(403, f"Quota exceeded (injected fault on {op}).", status="RESOURCE_EXHAUSTED")
    if kind == "denied":  # the caller's roles lack the method's permission
        return ApiError(403, f"Permission denied for {op} (injected fault).", status="PERMISSION_DENIED")
    return ApiError(503, f"ZONE_RESOURCE_POOL_EXHAUSTED: the zone does not have enough resources "
                         f"available to fulfil the request (injected stockout on {op}).")


MAX_BODY = 16 * 1024 * 1024
# How long a call with the injected `slow` fault takes before it is answered (the real Billing Catalog
# takes seconds for Compute Engine's thousands of SKUs over many pages).
SLOW_FAULT_S = 3.0
# Streams (watches) are served outside the state lock; a response body that is an iterator of
# bytes is sent chunk by chunk, flushed after each.
Stream = Iterator[bytes]


class BadRequestBody(Exception):
    """A request whose framing cannot be read: answered 400 by the server itself."""


class PortInUse(OSError):
    """The port an API should listen on is taken (by another sandbox, most likely)."""

    def __init__(self, api: str, port: int):
        super().__init__(f"port {port} for the sandbox's {api} API is already in use")
        self.api, self.port = api, port


class ApiServer:
    """One API on one loopback port, plain HTTP or HTTPS.

    `match` adds values every request of this server routes with (the cluster a Kubernetes endpoint
    serves); `authenticate`, when given, runs before routing and raises `ApiError(401)` for a
    request without valid credentials; `guard`, when given, runs after routing under the state lock
    (the API's own service enabled in the caller's project, for instance); `scope`, when given, names
    the clusters a routed request touches, whose simulations run before it (`Sandbox.reconcile`; without
    it, all of them).
    """

    def __init__(self, sandbox: "Sandbox", api: str, routes: list[Route], render_error: ErrorRenderer,
                 port: int, match: dict[str, str] | None = None, ssl_context: ssl.SSLContext | None = None,
                 authenticate: Callable[[Request], None] | None = None,
                 guard: Callable[["Sandbox", Request], None] | None = None,
                 scope: Callable[[Request], Iterable[str] | None] | None = None):
        self.sandbox = sandbox
        self.guard = guard
        self.scope = scope
        self.api = api
        self.routes = routes
        self.render_error = render_error
        self.match = dict(match or {})
        self.ssl_context = ssl_context
        self.authenticate = authenticate
        try:
            self.httpd = _Server(("127.0.0.1", port), self._handler_class(), ssl_context)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortInUse(api, port) from None
            raise
        self.port = self.httpd.server_address[1]

    @property
    def base_url(self) -> str:
        return f"{'https' if self.ssl_context else 'http'}://127.0.0.1:{self.port}"

    def start(self) -> None:
        ACCEPTOR.add(self.httpd)

    def stop(self) -> None:
        ACCEPTOR.remove(self.httpd)
        self.httpd.server_close()

    def dispatch(self, method: str, raw_path: str, body: bytes, headers) -> Response:
        url = urlsplit(raw_path)
        params = parse_qs(url.query, keep_blank_values=True)
        path = url.path
        if len(path) > 1 and path.endswith("/"):
            path = path.rstrip("/")
        try:
            req = Request(method, path, params, body, headers, dict(self.match))
            if self.authenticate is not None:
                self.authenticate(req)
            route, match = self._route(method, path)
            op = route.op_for(match)
            req.match.update(match)
            sb = self.sandbox
            rule = None
            if self.api != "admin":  # the admin API is the test's hand, not a client's call
                with sb.store.lock:
                    sb.counters.record(self.api, op, route.mutating)
                    rule = sb.faults.take(self.api, op)
            kind = rule.kind if rule else None
            if kind == "slow":  # a slow answer holds back this caller only, never the other APIs
                time.sleep(SLOW_FAULT_S)
                kind = None
            if kind == "timeout":  # held longer than the caller waits; then answered as usual
                time.sleep(rule.seconds or TIMEOUT_FAULT_S)
                kind = None
            lost = kind == "lost"
            if lost:
                kind = None
            with sb.store.lock:
                if kind in ("503", "429", "500", "busy", "denied"):
                    raise fault_error(kind, op)
                req.fault = kind
                scope = self.scope(req) if self.scope is not None else None
                scope = tuple(scope) if scope is not None else None
                sb.store.touching = scope  # what this request changes is in these clusters (None: any)
                try:
                    sb.reconcile(scope)
                    if self.guard is not None:
                        self.guard(sb, req)
                    result = route.handler(sb, req)
                    if req.fault is not None:
                        # The handler did not turn the fault into an operation error itself.
                        raise fault_error(req.fault, op)
                finally:
                    sb.store.touching = None
                    sb.store.save_soon()
            resp = result if isinstance(result, Response) else Response(200, result)
            if lost:
                return Response(resp.status, None, lost=True)
            return resp
        except ApiError as err:
            return self.render_error(err)
        except RecursionError:  # a body nested deeper than the parsers go
            return self.render_error(ApiError(400, "the request body is nested too deeply to be parsed",
                                              reason="BadRequest"))
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

            def _read_body(self) -> bytes:
                if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
                    return self._read_chunked()
                raw = self.headers.get("Content-Length")
                if raw is None:
                    return b""
                if not raw.strip().isdigit():
                    raise BadRequestBody(f"Content-Length {raw!r} is not a non-negative integer")
                length = int(raw)
                if length > MAX_BODY:
                    raise BadRequestBody(f"Content-Length {length} is over the sandbox's {MAX_BODY} bytes")
                body = self.rfile.read(length) if length else b""
                if len(body) != length:
                    raise BadRequestBody(f"the body ended after {len(body)} of {length} bytes")
                return body

            def _read_chunked(self) -> bytes:
                out = bytearray()
                while True:
                    line = self.rfile.readline(1024).strip()
                    try:
                        size = int(line.split(b";")[0], 16)
                    except ValueError:
                        raise BadRequestBody("a malformed chunk size") from None
                    if size == 0:
                        while self.rfile.readline(1024).strip():
                            pass
                        return bytes(out)
                    if len(out) + size > MAX_BODY:
                        raise BadRequestBody(f"a chunked body over the sandbox's {MAX_BODY} bytes")
                    out += self.rfile.read(size)
                    self.rfile.readline(8)

            def _serve(self):
                try:
                    body = self._read_body()
                except BadRequestBody as exc:
                    resp = server.render_error(ApiError(400, str(exc), reason="BadRequest"))
                    self.close_connection = True  # the rest of the stream cannot be framed
                    return self._send(resp)
                resp = server.dispatch(self.command, self.path, body, self.headers)
                if resp.lost:  # carried out; the connection drops before the answer leaves
                    self.close_connection = True
                    return None
                self._send(resp)

            def _send(self, resp: Response) -> None:
                if not isinstance(resp.body, (dict, list, str, bytes, type(None))):
                    return self._stream(resp)
                if isinstance(resp.body, (dict, list)):
                    payload = json.dumps(resp.body).encode()
                elif isinstance(resp.body, str):
                    payload = resp.body.encode()
                else:
                    payload = resp.body or b""
                self.send_response(resp.status)
                self.send_header("Content-Type", resp.content_type)
                self.send_header("Content-Length", str(len(payload)))
                if self.close_connection:
                    self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(payload)

            def _stream(self, resp: Response) -> None:
                self.send_response(resp.status)
                self.send_header("Content-Type", resp.content_type)
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                try:
                    for chunk in resp.body:
                        if chunk:
                            self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                            self.wfile.flush()
                    self.wfile.write(b"0\r\n\r\n")
                except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
                    self.close_connection = True
                finally:
                    close = getattr(resp.body, "close", None)
                    if close is not None:
                        close()

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

        return Handler


class _Server(ThreadingHTTPServer):
    """A threading HTTP server whose TLS handshake happens in each connection's own thread, so a
    slow (or plain-HTTP) client never stalls the accept loop."""

    daemon_threads = True

    def __init__(self, address, handler, ssl_context: ssl.SSLContext | None):
        self.ssl_context = ssl_context
        super().__init__(address, handler)

    def finish_request(self, request, client_address):
        if self.ssl_context is None:
            return super().finish_request(request, client_address)
        try:
            request.settimeout(30)
            tls = self.ssl_context.wrap_socket(request, server_side=True)
            tls.settimeout(None)
        except (ssl.SSLError, OSError):
            return  # not TLS, or the client went away: nothing to answer
        try:
            super().finish_request(tls, client_address)
        finally:
            tls.close()

    def handle_error(self, request, client_address):
        pass  # a client that hangs up mid-request is not the sandbox's error
