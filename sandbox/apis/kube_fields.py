"""Field ownership: a simplified server-side apply, recorded as `metadata.managedFields`.

Ownership is tracked per *leaf* field (maps recurse, lists of named objects are associative on
`name`, other lists are atomic) and recorded as FieldsV1 entries: `Apply` for each applier, `Update`
for other writes (manager from the `fieldManager` parameter, else the User-Agent's product name, as
the real server does) -- but only on objects already under field management (applied once, or
drifted through the admin API): an object only ever created and updated imperatively carries no
managedFields, which keeps lists cheap for the Python client, and so cannot conflict with a later
first apply. Applying a different value to a field another manager owns is a 409 Conflict naming
manager and field, unless `force=true`, which takes the field over. Fields an applier applied before
and omits now are removed unless someone else owns them. Status is not tracked, and types are not
consulted.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from ..wire.kube import KubeError, ResourceType
from .kube_patch import _named_list, strategic_merge_patch


# Server-owned metadata: never part of a field manager's set, never taken from a client's body.
SERVER_META = frozenset({"uid", "resourceVersion", "generation", "creationTimestamp", "managedFields",
                          "selfLink", "deletionTimestamp", "deletionGracePeriodSeconds"})

IDENTITY_META = SERVER_META | {"name", "namespace"}

_MISSING = object()


def _item_token(item: dict) -> str:
    return "k:" + json.dumps({"name": item["name"]}, separators=(",", ":"))


def _walk(value: Any, path: tuple, out: dict) -> None:
    if isinstance(value, dict) and value:
        for k, v in value.items():
            _walk(v, path + ("f:" + k,), out)
    elif isinstance(value, list) and _named_list(value) and len({i["name"] for i in value}) == len(value):
        for item in value:
            _walk(item, path + (_item_token(item),), out)
    else:
        out[path] = value


def leaf_fields(obj: dict, rt: ResourceType) -> dict[tuple, Any]:
    """Every field a manager can own, as a FieldsV1 path -> value (see the module docstring)."""
    out: dict[tuple, Any] = {}
    for key, value in obj.items():
        if key in ("apiVersion", "kind") or (key == "status" and "status" in rt.subresources):
            continue
        if key == "metadata" and isinstance(value, dict):
            for mk, mv in value.items():
                if mk not in IDENTITY_META:
                    _walk(mv, ("f:metadata", "f:" + mk), out)
        else:
            _walk(value, ("f:" + key,), out)
    return out


def encode_fields(paths) -> dict:
    tree: dict = {}
    for path in sorted(paths):
        node = tree
        for token in path:
            node = node.setdefault(token, {})
            if token.startswith("k:"):
                node.setdefault(".", {})
    return tree


def _decode_fields(tree: Any, prefix: tuple = ()) -> set[tuple]:
    out: set[tuple] = set()
    if not isinstance(tree, dict):
        return out
    children = [k for k in tree if k != "."]
    if not children and prefix:
        out.add(prefix)
    for k in children:
        out |= _decode_fields(tree[k], prefix + (k,))
    return out


def _field_text(path: tuple) -> str:
    text = ""
    for token in path:
        if token.startswith("f:"):
            text += "." + token[2:]
        else:
            key = json.loads(token[2:])
            text += "[" + ",".join(f'{k}="{v}"' for k, v in key.items()) + "]"
    return text


def _managed(obj: dict) -> list[tuple[dict, set]]:
    entries = []
    for entry in (obj.get("metadata") or {}).get("managedFields") or []:
        if isinstance(entry, dict):
            entries.append((entry, _decode_fields(entry.get("fieldsV1"))))
    return entries


def _entries_json(entries: list[tuple[dict, set]], touched: dict[int, set], now: str) -> list[dict]:
    """managedFields from (entry, paths); entries in `touched` (by id) get new fieldsV1 and time."""
    out = []
    for entry, paths in entries:
        if not paths:
            continue
        if id(entry) in touched:
            entry = {**entry, "time": now, "fieldsType": "FieldsV1", "fieldsV1": encode_fields(paths)}
        out.append(entry)
    return out


def track_update(current: dict | None, new: dict, rt: ResourceType, manager: str, now: str,
                 always: bool = False) -> None:
    """Record a non-apply write by `manager` in `new`'s managedFields: it owns what it changed.

    Only objects already under field management (someone applied them, or drift touched them) are
    tracked, unless `always`: imperatively created objects carry no managedFields, which keeps
    lists cheap for clients (the official Python client parses every entry's timestamp).
    """
    if not always and not (current and current["metadata"].get("managedFields")):
        new["metadata"].pop("managedFields", None)
        return
    old_fields = leaf_fields(current, rt) if current else {}
    new_fields = leaf_fields(new, rt)
    changed = {p for p, v in new_fields.items() if old_fields.get(p, _MISSING) != v}
    gone = old_fields.keys() - new_fields.keys()
    entries = _managed(current) if current else []
    if not changed and not gone:
        if entries:
            new["metadata"]["managedFields"] = current["metadata"]["managedFields"]
        else:
            new["metadata"].pop("managedFields", None)
        return
    touched: dict[int, set] = {}
    mine = None
    for entry, paths in entries:
        if entry.get("manager") == manager and entry.get("operation") == "Update" and not entry.get("subresource"):
            mine = (entry, paths)
        if paths & (changed | gone):
            paths -= changed | gone
            touched[id(entry)] = paths
    if mine is None:
        mine = ({"manager": manager, "operation": "Update", "apiVersion": rt.api_version}, set())
        entries.append(mine)
    mine[1].update(changed)
    touched[id(mine[0])] = mine[1]
    new["metadata"]["managedFields"] = _entries_json(entries, touched, now)


def _delete_path(obj: dict, path: tuple) -> None:
    """Remove one owned field, and the maps and list items its removal leaves empty.

    An associative list item's `name` goes last and only with the item: a remaining field keeps it.
    """
    trail = []  # (container, token, the value the token names in it)
    cur: Any = obj
    for token in path:
        if token.startswith("f:") and isinstance(cur, dict) and token[2:] in cur:
            child = cur[token[2:]]
        elif token.startswith("k:") and isinstance(cur, list):
            name = json.loads(token[2:]).get("name")
            child = next((i for i in cur if isinstance(i, dict) and i.get("name") == name), None)
            if child is None:
                return
        else:
            return
        trail.append((cur, token, child))
        cur = child
    if len(trail) > 1 and path[-1] == "f:name" and trail[-2][1].startswith("k:") and len(trail[-1][0]) > 1:
        return
    for depth in range(len(trail) - 1, -1, -1):
        parent, token, child = trail[depth]
        if token.startswith("f:"):
            parent.pop(token[2:], None)
        else:
            parent[:] = [i for i in parent if i is not child]
        if depth == 0 or parent or trail[depth - 1][1] == "f:metadata":
            break  # stop at the first container that still holds something, and never drop metadata


def _removal_order(path: tuple):
    """Deepest fields first; among siblings, an associative item's `name` after the rest."""
    return (-len(path), path[-1] == "f:name")


def server_side_apply(current: dict, applied: dict, rt: ResourceType, manager: str, force: bool, now: str) -> dict:
    """The object after `manager` applies `applied` to `current` (simplified SSA, see the docstring)."""
    applied_fields = leaf_fields(applied, rt)
    live_fields = leaf_fields(current, rt)
    entries = _managed(current)
    mine = None
    conflicts: list[tuple[str, tuple]] = []
    for entry, paths in entries:
        if entry.get("manager") == manager and entry.get("operation") == "Apply":
            mine = (entry, paths)
            continue
        for p in paths & applied_fields.keys():
            if live_fields.get(p, _MISSING) != applied_fields[p]:
                conflicts.append((entry.get("manager", ""), p))
    if conflicts and not force:
        count = len(conflicts)
        lines = "\n".join(f'- conflict with "{m}": {_field_text(p)}' for m, p in sorted(conflicts))
        raise KubeError(409, f"Apply failed with {count} conflict{'s' if count > 1 else ''}:\n{lines}", "Conflict",
                        {"name": current["metadata"]["name"], "kind": rt.plural,
                         "causes": [{"type": "FieldManagerConflict", "message": f'conflict with "{m}"',
                                     "field": _field_text(p)} for m, p in sorted(conflicts)]})
    touched: dict[int, set] = {}
    for entry, paths in entries:
        if mine is not None and entry is mine[0]:
            continue
        taken = {p for _, p in conflicts} & paths
        if taken:
            paths -= taken
            touched[id(entry)] = paths
    owned_by_others = set().union(*(paths for entry, paths in entries if mine is None or entry is not mine[0]))
    new = copy.deepcopy(current)
    if mine is not None:
        for p in sorted(mine[1] - applied_fields.keys() - owned_by_others, key=_removal_order):
            _delete_path(new, p)
    # The live status of a kind with a status subresource is not the applier's to change.
    ignored = ("apiVersion", "kind", "status") if "status" in rt.subresources else ("apiVersion", "kind")
    body = {k: v for k, v in applied.items() if k not in ignored}
    body["metadata"] = {k: v for k, v in (applied.get("metadata") or {}).items() if k not in IDENTITY_META}
    new = strategic_merge_patch(new, body)
    if mine is None:
        mine = ({"manager": manager, "operation": "Apply", "apiVersion": rt.api_version}, set())
        entries.append(mine)
    values_changed = any(live_fields.get(p, _MISSING) != v for p, v in applied_fields.items())
    if mine[1] != applied_fields.keys() or touched or values_changed:
        mine[1].clear()
        mine[1].update(applied_fields.keys())
        touched[id(mine[0])] = mine[1]
    new["metadata"]["managedFields"] = _entries_json(entries, touched, now)
    if not new["metadata"]["managedFields"]:
        new["metadata"].pop("managedFields")
    return new
