"""Kubernetes protobuf request bodies, decoded to the JSON objects kube-apiserver would store.

kubectl 1.32 and later send the built-in kinds it creates with typed clients (`create namespace`,
`secret`, `configmap`, `deployment`, `service`, `serviceaccount`, `job`; `auth can-i`; `auth whoami`)
as `application/vnd.kubernetes.protobuf` and never falls back to JSON after a 415 (client-go
v0.32 "Use protobuf for core clients", `gentype.PrefersProtobuf`). The body is the magic `k8s\\0`
followed by a `runtime.Unknown` {1 typeMeta {1 apiVersion, 2 kind}, 2 raw, 3 contentEncoding,
4 contentType} whose `raw` is the object's own message
(https://kubernetes.io/docs/reference/using-api/api-concepts/#protobuf-encoding).

The schema below gives, per message, the field numbers of k8s.io/api and k8s.io/apimachinery's
`generated.proto` (v0.33) for the fields those commands send; fields not listed are skipped, never
guessed. Go writes non-pointer fields even when empty (`""`, `0`, a zero-length message) and leaves
nil pointers out, so a zero value is kept only for fields marked optional (`?`): that is what the
JSON encoder's `omitempty` would have produced from the same Go object.
"""

from __future__ import annotations

import base64
import datetime
from typing import Any

MAGIC = b"k8s\x00"
PROTOBUF = "application/vnd.kubernetes.protobuf"

# message -> {field number: (json name, type)}. Types: str, bytes, int, bool (scalars); "msg:<Name>";
# "rep:<type>" (repeated); "map:<value type>" (string keys); a trailing "?" marks a Go pointer field.
S = "str"
SCHEMA: dict[str, dict[int, tuple[str, str]]] = {
    "Unknown": {1: ("typeMeta", "msg:RuntimeTypeMeta"), 2: ("raw", "bytes"), 3: ("contentEncoding", S),
                4: ("contentType", S)},
    "RuntimeTypeMeta": {1: ("apiVersion", S), 2: ("kind", S)},
    "ObjectMeta": {1: ("name", S), 2: ("generateName", S), 3: ("namespace", S), 5: ("uid", S),
                   6: ("resourceVersion", S), 7: ("generation", "int"), 8: ("creationTimestamp", "msg:Time"),
                   11: ("labels", "map:str"), 12: ("annotations", "map:str"),
                   13: ("ownerReferences", "rep:msg:OwnerReference"), 14: ("finalizers", "rep:str")},
    "OwnerReference": {1: ("kind", S), 3: ("name", S), 4: ("uid", S), 5: ("apiVersion", S),
                       6: ("controller", "bool?"), 7: ("blockOwnerDeletion", "bool?")},
    "Time": {1: ("seconds", "int"), 2: ("nanos", "int")},
    "Quantity": {1: ("string", S)},
    "IntOrString": {1: ("type", "int"), 2: ("intVal", "int"), 3: ("strVal", S)},
    "LabelSelector": {1: ("matchLabels", "map:str"), 2: ("matchExpressions", "rep:msg:LabelSelectorRequirement")},
    "LabelSelectorRequirement": {1: ("key", S), 2: ("operator", S), 3: ("values", "rep:str")},
    # core/v1
    "Namespace": {1: ("metadata", "msg:ObjectMeta"), 2: ("spec", "msg:NamespaceSpec")},
    "NamespaceSpec": {1: ("finalizers", "rep:str")},
    "Secret": {1: ("metadata", "msg:ObjectMeta"), 2: ("data", "map:bytes"), 3: ("type", S),
               4: ("stringData", "map:str"), 5: ("immutable", "bool?")},
    "ConfigMap": {1: ("metadata", "msg:ObjectMeta"), 2: ("data", "map:str"), 3: ("binaryData", "map:bytes"),
                  4: ("immutable", "bool?")},
    "ServiceAccount": {1: ("metadata", "msg:ObjectMeta"), 3: ("imagePullSecrets", "rep:msg:LocalObjectReference"),
                       4: ("automountServiceAccountToken", "bool?")},
    "LocalObjectReference": {1: ("name", S)},
    "Service": {1: ("metadata", "msg:ObjectMeta"), 2: ("spec", "msg:ServiceSpec")},
    "ServiceSpec": {1: ("ports", "rep:msg:ServicePort"), 2: ("selector", "map:str"), 3: ("clusterIP", S),
                    4: ("type", S), 5: ("externalIPs", "rep:str"), 7: ("sessionAffinity", S),
                    10: ("externalName", S), 11: ("externalTrafficPolicy", S), 18: ("clusterIPs", "rep:str"),
                    22: ("internalTrafficPolicy", S)},
    "ServicePort": {1: ("name", S), 2: ("protocol", S), 3: ("port", "int"), 4: ("targetPort", "msg:IntOrString"),
                    5: ("nodePort", "int"), 6: ("appProtocol", "str?")},
    "PodTemplateSpec": {1: ("metadata", "msg:ObjectMeta"), 2: ("spec", "msg:PodSpec")},
    "PodSpec": {1: ("volumes", "rep:msg:Volume"), 2: ("containers", "rep:msg:Container"), 3: ("restartPolicy", S),
                4: ("terminationGracePeriodSeconds", "int?"), 5: ("activeDeadlineSeconds", "int?"),
                6: ("dnsPolicy", S), 7: ("nodeSelector", "map:str"), 8: ("serviceAccountName", S),
                10: ("nodeName", S), 11: ("hostNetwork", "bool"), 15: ("imagePullSecrets", "rep:msg:LocalObjectReference"),
                19: ("schedulerName", S), 20: ("initContainers", "rep:msg:Container"),
                22: ("tolerations", "rep:msg:Toleration"), 24: ("priorityClassName", S)},
    "Volume": {1: ("name", S)},
    "Container": {1: ("name", S), 2: ("image", S), 3: ("command", "rep:str"), 4: ("args", "rep:str"),
                  5: ("workingDir", S), 6: ("ports", "rep:msg:ContainerPort"), 7: ("env", "rep:msg:EnvVar"),
                  8: ("resources", "msg:ResourceRequirements"), 13: ("terminationMessagePath", S),
                  14: ("imagePullPolicy", S), 16: ("stdin", "bool"), 17: ("stdinOnce", "bool"), 18: ("tty", "bool"),
                  20: ("terminationMessagePolicy", S)},
    "ContainerPort": {1: ("name", S), 2: ("hostPort", "int"), 3: ("containerPort", "int"), 4: ("protocol", S)},
    "EnvVar": {1: ("name", S), 2: ("value", S)},
    "ResourceRequirements": {1: ("limits", "map:msg:Quantity"), 2: ("requests", "map:msg:Quantity")},
    "Toleration": {1: ("key", S), 2: ("operator", S), 3: ("value", S), 4: ("effect", S),
                   5: ("tolerationSeconds", "int?")},
    # apps/v1, batch/v1
    "Deployment": {1: ("metadata", "msg:ObjectMeta"), 2: ("spec", "msg:DeploymentSpec")},
    "DeploymentSpec": {1: ("replicas", "int?"), 2: ("selector", "msg:LabelSelector"),
                       3: ("template", "msg:PodTemplateSpec"), 4: ("strategy", "msg:DeploymentStrategy"),
                       5: ("minReadySeconds", "int"), 6: ("revisionHistoryLimit", "int?"), 7: ("paused", "bool"),
                       9: ("progressDeadlineSeconds", "int?")},
    "DeploymentStrategy": {1: ("type", S)},
    "Job": {1: ("metadata", "msg:ObjectMeta"), 2: ("spec", "msg:JobSpec")},
    "JobSpec": {1: ("parallelism", "int?"), 2: ("completions", "int?"), 3: ("activeDeadlineSeconds", "int?"),
                4: ("selector", "msg:LabelSelector"), 6: ("template", "msg:PodTemplateSpec"),
                7: ("backoffLimit", "int?"), 8: ("ttlSecondsAfterFinished", "int?"), 10: ("suspend", "bool?")},
    # authorization.k8s.io/v1, authentication.k8s.io/v1
    "SelfSubjectAccessReview": {1: ("metadata", "msg:ObjectMeta"), 2: ("spec", "msg:SelfSubjectAccessReviewSpec")},
    "SelfSubjectAccessReviewSpec": {1: ("resourceAttributes", "msg:ResourceAttributes"),
                                    2: ("nonResourceAttributes", "msg:NonResourceAttributes")},
    "ResourceAttributes": {1: ("namespace", S), 2: ("verb", S), 3: ("group", S), 4: ("version", S), 5: ("resource", S),
                           6: ("subresource", S), 7: ("name", S)},
    "NonResourceAttributes": {1: ("path", S), 2: ("verb", S)},
    "SelfSubjectReview": {1: ("metadata", "msg:ObjectMeta")},
}
# apiVersion/kind -> top-level message.
KINDS = {("v1", "Namespace"): "Namespace", ("v1", "Secret"): "Secret", ("v1", "ConfigMap"): "ConfigMap",
         ("v1", "ServiceAccount"): "ServiceAccount", ("v1", "Service"): "Service",
         ("apps/v1", "Deployment"): "Deployment", ("batch/v1", "Job"): "Job",
         ("authorization.k8s.io/v1", "SelfSubjectAccessReview"): "SelfSubjectAccessReview",
         ("authentication.k8s.io/v1", "SelfSubjectReview"): "SelfSubjectReview"}


class ProtobufError(ValueError):
    """A body that is not a Kubernetes protobuf envelope, or not a kind the sandbox decodes."""


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data):
            raise ProtobufError("truncated varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise ProtobufError("varint too long")


def _fields(data: bytes):
    """(field number, wire type, value) for each field: an int for varints, bytes for length-delimited."""
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire == 2:
            size, pos = _varint(data, pos)
            if pos + size > len(data):
                raise ProtobufError("truncated field")
            value, pos = data[pos:pos + size], pos + size
        elif wire == 1:
            value, pos = data[pos:pos + 8], pos + 8
        elif wire == 5:
            value, pos = data[pos:pos + 4], pos + 4
        else:
            raise ProtobufError(f"unsupported wire type {wire}")
        yield number, wire, value


def _scalar(kind: str, value):
    if kind == "str":
        return value.decode("utf-8") if isinstance(value, bytes) else str(value)
    if kind == "bytes":
        return base64.b64encode(value).decode()  # JSON carries bytes as base64, as Secret.data does
    if kind == "bool":
        return bool(value)
    if kind == "int":
        return value - (1 << 64) if value >= 1 << 63 else value  # int64 two's complement
    raise ProtobufError(f"unknown scalar type {kind}")


def _convert(message: str, obj: dict) -> Any:
    """The JSON form of special messages (Time, Quantity, IntOrString); others stay objects."""
    if message == "Time":
        if not obj.get("seconds"):
            return None
        return datetime.datetime.fromtimestamp(obj["seconds"], datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    if message == "Quantity":
        return obj.get("string") or None
    if message == "IntOrString":
        return obj.get("strVal", "") if obj.get("type") == 1 else obj.get("intVal", 0)
    return obj


def _empty(value: Any) -> bool:
    return value is None or value == "" or value == 0 or value is False or value == [] or value == {}


def decode_message(message: str, data: bytes) -> Any:
    fields = SCHEMA.get(message)
    if fields is None:
        raise ProtobufError(f"message {message} is not in the sandbox's schema")
    out: dict[str, Any] = {}
    for number, _, raw in _fields(data):
        spec = fields.get(number)
        if spec is None:
            continue  # a field the schema does not list: skipped, never guessed
        name, kind = spec
        optional = kind.endswith("?")
        kind = kind.rstrip("?")
        if kind.startswith("rep:"):
            out.setdefault(name, []).append(_value(kind[4:], raw))
        elif kind.startswith("map:"):
            entry = {n: v for n, _, v in _fields(raw)}
            key = entry.get(1, b"").decode("utf-8")
            out.setdefault(name, {})[key] = _value(kind[4:], entry.get(2, b""))
        else:
            value = _value(kind, raw)
            if optional or not _empty(value):
                out[name] = value
            else:
                out.pop(name, None)
    for name in [n for n, v in out.items() if v in ([], {})]:
        del out[name]
    return _convert(message, out)


def _value(kind: str, raw) -> Any:
    if kind.startswith("msg:"):
        if not isinstance(raw, bytes):
            raise ProtobufError("a message field with a varint wire type")
        return decode_message(kind[4:], raw)
    return _scalar(kind, raw)


def decode(body: bytes) -> dict:
    """The object a protobuf request body carries, as JSON with apiVersion and kind set."""
    if not body.startswith(MAGIC):
        raise ProtobufError("the body does not start with the Kubernetes protobuf magic 'k8s\\x00'")
    envelope = decode_message("Unknown", body[len(MAGIC):])
    type_meta = envelope.get("typeMeta") or {}
    api_version, kind = type_meta.get("apiVersion", ""), type_meta.get("kind", "")
    message = KINDS.get((api_version, kind))
    if message is None:
        raise ProtobufError(f"the sandbox decodes protobuf bodies of {', '.join(k for _, k in KINDS)} only, "
                            f"not {kind or '(no kind)'} ({api_version or 'no apiVersion'}): send JSON")
    obj = decode_message(message, base64.b64decode(envelope.get("raw", "")))
    obj = {"apiVersion": api_version, "kind": kind, **obj}
    obj.setdefault("metadata", {})
    return obj
