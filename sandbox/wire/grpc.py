"""gRPC for the APIs whose official Python client speaks nothing else (IAM admin v1).

Each call is transcoded onto the REST route the API's HTTP face already serves, the way Google's
front end maps one onto the other (the proto's `google.api.http` rules: path fields into the URL, the
rest into the body or, for GET, the query). Both faces therefore share one implementation, one state
lock, the call counters and injected faults. HTTP errors become the gRPC status Google uses for them
(409 keeps its own: ALREADY_EXISTS or ABORTED). Plain-text HTTP/2 on loopback, as the client's
`grpc.insecure_channel` speaks it.
"""

from __future__ import annotations

import json
from concurrent import futures
from typing import Any, Callable
from urllib.parse import urlencode

from google.protobuf import json_format
from google.protobuf import message as pb_message

from .http import ApiServer, PortInUse, Response

# (request type, response type, HTTP method, path from the request as JSON, body: "*" or None)
Method = tuple[Any, Any, str, Callable[[dict], str], str | None]

_STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
           409: "ALREADY_EXISTS", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 501: "UNIMPLEMENTED",
           503: "UNAVAILABLE"}


def _raw(msg):
    return msg if isinstance(msg, pb_message.Message) else type(msg).pb(msg)


def _to_json(msg) -> dict:
    return json_format.MessageToDict(_raw(msg))


def _from_json(msg_type, text: str):
    if isinstance(msg_type, type) and issubclass(msg_type, pb_message.Message):
        return json_format.Parse(text, msg_type(), ignore_unknown_fields=True)
    return msg_type.from_json(text, ignore_unknown_fields=True)


def _codec(msg_type) -> tuple[Callable, Callable]:
    if isinstance(msg_type, type) and issubclass(msg_type, pb_message.Message):
        return msg_type.FromString, lambda m: m.SerializeToString()
    return msg_type.deserialize, msg_type.serialize


class GrpcServer:
    """One gRPC service on one loopback port, transcoded onto `rest` (an `ApiServer`)."""

    def __init__(self, rest: ApiServer, service: str, methods: dict[str, Method], port: int):
        import grpc

        self.rest = rest
        # Kept to shut down with the server: grpc's stop() leaves the executor's threads alive, one set per
        # sandbox ever started in the process (hundreds in a test session).
        self.executor = futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix=f"sandbox-{rest.api}-grpc")
        self.server = grpc.server(self.executor)
        handlers = {}
        for name, method in methods.items():
            request_type, response_type = method[0], method[1]
            decode, _ = _codec(request_type)
            _, encode = _codec(response_type)
            handlers[name] = grpc.unary_unary_rpc_method_handler(
                self._handler(method), request_deserializer=decode, response_serializer=encode)
        self.server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, handlers),))
        try:
            self.port = self.server.add_insecure_port(f"127.0.0.1:{port}")
        except RuntimeError:  # grpcio raises where older versions answered port 0
            self.port = 0
        if self.port == 0:
            raise PortInUse(f"{rest.api} (gRPC)", port)

    @property
    def base_url(self) -> str:
        return f"127.0.0.1:{self.port}"  # a gRPC target, not a URL: what the client's channel dials

    def _handler(self, method: Method):
        import grpc

        _, response_type, http_method, path_of, body = method

        def call(request, context):
            data = _to_json(request)
            path = path_of(data)
            fields = {k: v for k, v in data.items() if k not in ("name", "resource")}
            raw = b""
            if http_method == "GET":
                scalars = {k: v for k, v in fields.items() if not isinstance(v, (dict, list))}
                path += f"?{urlencode(scalars)}" if scalars else ""
            elif body == "*":
                raw = json.dumps(fields).encode()
            reply: Response = self.rest.dispatch(http_method, path, raw, {"Content-Type": "application/json"})
            if reply.lost:  # carried out, the answer lost: what a dropped connection looks like to a gRPC client
                context.abort(grpc.StatusCode.UNAVAILABLE, "Socket closed")
            text = reply.body if isinstance(reply.body, str) else json.dumps(reply.body)
            if reply.status >= 400:
                error = (json.loads(text) if text else {}).get("error") or {}
                status = error.get("status") if reply.status == 409 else _STATUS.get(reply.status, "UNKNOWN")
                context.abort(getattr(grpc.StatusCode, status or "UNKNOWN", grpc.StatusCode.UNKNOWN),
                              error.get("message") or f"HTTP {reply.status}")
            return _from_json(response_type, text or "{}")
        return call

    def start(self) -> None:
        self.server.start()

    def stop(self) -> None:
        self.server.stop(grace=None).wait(10)
        self.executor.shutdown(wait=False, cancel_futures=True)
