"""The PATCH flavours of the Kubernetes API: JSON merge patch (RFC 7386), a simplified strategic merge
patch and JSON patch (RFC 6902). Pure functions over JSON documents.

Strategic merge patch is simplified: it is a merge patch in which a list whose items are all objects
with a `name` merges item by item on `name` (containers, env, volumes, ports, ...), honouring the
`$patch: delete | replace` directives and `$deleteFromPrimitiveList/<field>`; every other list is
replaced whole. The real API server reads each field's patch strategy and merge key from the Go
types (`volumeMounts` merge on `mountPath`, `tolerations` are atomic, ...).
"""

from __future__ import annotations

import copy
import json
import re
from typing import Any

from ..wire.kube import invalid


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch. Untouched subtrees are shared with `target`, not copied."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _named_list(items: Any, directives: bool = False) -> bool:
    if not isinstance(items, list) or not items:
        return False
    for item in items:
        if not isinstance(item, dict):
            return False
        if not isinstance(item.get("name"), str) and not (directives and "$patch" in item):
            return False
    return True


def _strip_directives(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_directives(v) for k, v in value.items() if not k.startswith("$")}
    if isinstance(value, list):
        return [_strip_directives(v) for v in value]
    return value


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    """Strategic merge patch, simplified (see the module docstring). Returns None for `$patch: delete`."""
    if not isinstance(patch, dict):
        return _strip_directives(copy.deepcopy(patch))
    directive = patch.get("$patch")
    if directive == "delete":
        return None
    if directive == "replace":
        return _strip_directives(copy.deepcopy(patch))
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith("$"):
            if key.startswith("$deleteFromPrimitiveList/") and isinstance(value, list):
                field = key.split("/", 1)[1]
                if isinstance(result.get(field), list):
                    result[field] = [v for v in result[field] if v not in value]
            continue
        if value is None:
            result.pop(key, None)
        elif isinstance(value, list):
            result[key] = _merge_list(result.get(key), value)
        else:
            merged = strategic_merge_patch(result.get(key), value)
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
    retain = patch.get("$retainKeys")
    if isinstance(retain, list):
        result = {k: v for k, v in result.items() if k in retain}
    return result


def _merge_list(live: Any, items: list) -> list:
    if any(isinstance(i, dict) and i.get("$patch") == "replace" and "name" not in i for i in items):
        return [_strip_directives(copy.deepcopy(i)) for i in items if not (isinstance(i, dict) and "$patch" in i)]
    if not _named_list(items, directives=True) or (live and not _named_list(live)):
        return _strip_directives(copy.deepcopy(items))  # an atomic list: replaced whole
    out = list(live or [])
    for item in items:
        if "name" not in item:
            continue
        pos = next((i for i, cur in enumerate(out) if cur.get("name") == item["name"]), None)
        if item.get("$patch") == "delete":
            if pos is not None:
                del out[pos]
        elif pos is None:
            out.append(strategic_merge_patch({}, item))
        else:
            out[pos] = strategic_merge_patch(out[pos], item)
    return out


def _pointer(path: Any) -> list[str]:
    if not isinstance(path, str) or (path and not path.startswith("/")):
        raise invalid(f'the JSON pointer "{path}" must be empty or start with "/"')
    if path == "":
        return []
    return [t.replace("~1", "/").replace("~0", "~") for t in path[1:].split("/")]


def _index(container: list, token: str, allow_end: bool) -> int:
    if allow_end and token == "-":
        return len(container)
    if not re.fullmatch(r"0|[1-9][0-9]*", token):
        raise invalid(f'"{token}" is not an array index')
    idx = int(token)
    if idx > len(container) or (idx == len(container) and not allow_end):
        raise invalid(f"array index {idx} is out of bounds")
    return idx


def _resolve(doc: Any, tokens: list[str]) -> Any:
    cur = doc
    for i, token in enumerate(tokens):
        if isinstance(cur, dict) and token in cur:
            cur = cur[token]
        elif isinstance(cur, list):
            cur = cur[_index(cur, token, False)]
        else:
            raise invalid(f'path "/{"/".join(tokens[:i + 1])}" does not exist')
    return cur


def json_patch(doc: Any, ops: list) -> Any:
    """RFC 6902 JSON patch (add, remove, replace, move, copy, test) on a copy of `doc`."""
    doc = copy.deepcopy(doc)

    def add(doc, tokens, value):
        if not tokens:
            return value
        parent = _resolve(doc, tokens[:-1])
        if isinstance(parent, dict):
            parent[tokens[-1]] = value
        elif isinstance(parent, list):
            parent.insert(_index(parent, tokens[-1], True), value)
        else:
            raise invalid(f"cannot add below a {type(parent).__name__}")
        return doc

    def remove(doc, tokens):
        if not tokens:
            raise invalid("cannot remove the whole document")
        parent = _resolve(doc, tokens[:-1])
        if isinstance(parent, dict):
            if tokens[-1] not in parent:
                raise invalid(f'cannot remove "{tokens[-1]}": it does not exist')
            return parent.pop(tokens[-1])
        if isinstance(parent, list):
            return parent.pop(_index(parent, tokens[-1], False))
        raise invalid(f"cannot remove below a {type(parent).__name__}")

    for n, op in enumerate(ops):
        if not isinstance(op, dict) or not isinstance(op.get("op"), str):
            raise invalid(f"JSON patch operation {n} is not an object with an `op`")
        kind = op["op"]
        tokens = _pointer(op.get("path"))
        if kind in ("add", "replace", "test") and "value" not in op:
            raise invalid(f'JSON patch operation {n} ("{kind}") needs a value')
        if kind == "add":
            doc = add(doc, tokens, copy.deepcopy(op["value"]))
        elif kind == "remove":
            remove(doc, tokens)
        elif kind == "replace":
            if not tokens:
                doc = copy.deepcopy(op["value"])
            else:
                _resolve(doc, tokens)  # must exist
                parent = _resolve(doc, tokens[:-1])
                if isinstance(parent, list):
                    parent[_index(parent, tokens[-1], False)] = copy.deepcopy(op["value"])
                else:
                    parent[tokens[-1]] = copy.deepcopy(op["value"])
        elif kind in ("move", "copy"):
            source = _pointer(op.get("from"))
            if kind == "move":
                if tokens[:len(source)] == source and tokens != source:
                    raise invalid(f'cannot move "{op.get("from")}" into its own child "{op.get("path")}"')
                value = remove(doc, source)
            else:
                value = copy.deepcopy(_resolve(doc, source))
            doc = add(doc, tokens, value)
        elif kind == "test":
            actual = _resolve(doc, tokens)
            if actual != op["value"] or type(actual) is not type(op["value"]):
                raise invalid(f'testing value {op.get("path")} failed: expected {json.dumps(op["value"])}, '
                               f"found {json.dumps(actual)}")
        else:
            raise invalid(f'JSON patch operation {n} has an unknown op "{kind}"')
    return doc
