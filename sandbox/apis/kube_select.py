"""Label and field selectors of Kubernetes list calls, as the real selector languages define them."""

from __future__ import annotations

import re
from typing import Any

from ..stores.kube import KubeStore
from ..wire.http import Request
from ..wire.kube import ResourceType, bad_request


# Fields a field selector may name: the universal ones, plus the per-kind ones the real server
# supports that platform tooling uses.
FIELD_LABELS: dict[str, tuple[str, ...]] = {
    "*": ("metadata.name", "metadata.namespace"),
    "Pod": ("spec.nodeName", "status.phase", "spec.restartPolicy", "spec.schedulerName",
            "spec.serviceAccountName", "status.podIP", "status.nominatedNodeName"),
    "Event": ("involvedObject.kind", "involvedObject.namespace", "involvedObject.name", "involvedObject.uid",
              "involvedObject.apiVersion", "involvedObject.resourceVersion", "involvedObject.fieldPath",
              "reason", "reportingComponent", "source", "type"),
    "Secret": ("type",),
    "Namespace": ("status.phase",),
    "Node": ("spec.unschedulable",),
}

_LABEL_REQ = re.compile(
    r"^\s*(?:(?P<not>!)\s*(?P<nkey>[A-Za-z0-9._/-]+)"
    r"|(?P<key>[A-Za-z0-9._/-]+)\s*(?:(?P<op>==|=|!=|>|<)\s*(?P<value>[A-Za-z0-9._-]*)"
    r"|\s+(?P<setop>in|notin)\s*\((?P<values>[^()]*)\))?)\s*$")

_FIELD_REQ = re.compile(r"^\s*(?P<key>[A-Za-z0-9._]+)\s*(?P<op>==|=|!=)\s*(?P<value>.*?)\s*$")


def _split_top(text: str) -> list[str]:
    """Split on commas outside parentheses (`a in (x,y),b` -> two requirements)."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p for p in parts if p.strip()]


def parse_label_selector(text: str):
    """A predicate over a labels dict for `=`,`==`,`!=`,`in`,`notin`,`key`,`!key`,`>`,`<`."""
    reqs = []
    for part in _split_top(text):
        m = _LABEL_REQ.match(part)
        if m is None:
            raise bad_request(f'unable to parse requirement: found "{part.strip()}", expected a label selector '
                               f"requirement (key, !key, key=value, key!=value, key in (a,b), key notin (a,b))")
        if m["not"]:
            reqs.append((m["nkey"], "!", None))
        elif m["setop"]:
            values = {v.strip() for v in m["values"].split(",") if v.strip()}
            reqs.append((m["key"], m["setop"], values))
        elif m["op"]:
            reqs.append((m["key"], m["op"], m["value"]))
        else:
            reqs.append((m["key"], "exists", None))

    def matches(labels: dict) -> bool:
        for key, op, value in reqs:
            present = key in labels
            actual = labels.get(key)
            if op == "exists":
                ok = present
            elif op == "!":
                ok = not present
            elif op in ("=", "=="):
                ok = present and actual == value
            elif op == "!=":
                ok = not present or actual != value
            elif op == "in":
                ok = present and actual in value
            elif op == "notin":
                ok = not present or actual not in value
            else:  # > and <: integer comparisons, as the real selector language defines them
                try:
                    ok = present and (int(actual) > int(value) if op == ">" else int(actual) < int(value))
                except ValueError:
                    ok = False
            if not ok:
                return False
        return True

    return matches


def _field_value(obj: dict, dotted: str) -> str:
    cur: Any = obj
    for part in dotted.split("."):
        cur = cur.get(part) if isinstance(cur, dict) else None
        if cur is None:
            return ""
    if isinstance(cur, bool):
        return "true" if cur else "false"
    return str(cur)


def parse_field_selector(text: str, rt: ResourceType):
    """A predicate over an object for `field=value`, `field==value`, `field!=value` terms."""
    allowed = FIELD_LABELS["*"] + FIELD_LABELS.get(rt.kind, ())
    reqs = []
    for part in text.split(","):
        if not part.strip():
            continue
        m = _FIELD_REQ.match(part)
        if m is None:
            raise bad_request(f'invalid field selector: "{part.strip()}": expected field=value or field!=value')
        if m["key"] not in allowed:
            raise bad_request(f'field label not supported: {m["key"]}')
        reqs.append((m["key"], m["op"] != "!=", m["value"]))

    def matches(obj: dict) -> bool:
        return all((_field_value(obj, key) == value) == equal for key, equal, value in reqs)

    return matches


def matcher(rt: ResourceType, req: Request):
    """A predicate over objects for the request's `labelSelector` and `fieldSelector` (None: all match)."""
    labels = req.param("labelSelector")
    fields = req.param("fieldSelector")
    label_ok = parse_label_selector(labels) if labels else None
    field_ok = parse_field_selector(fields, rt) if fields else None
    if label_ok is None and field_ok is None:
        return None
    return lambda obj: ((label_ok is None or label_ok(obj["metadata"].get("labels") or {}))
                        and (field_ok is None or field_ok(obj)))


def select(store: KubeStore, rt: ResourceType, namespace: str | None, req: Request) -> list[dict]:
    ok = matcher(rt, req)
    items = [obj for obj in store.list_objects(rt.group, rt.plural, namespace) if ok is None or ok(obj)]
    # etcd returns keys in order: namespace, then name.
    items.sort(key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]))
    return items
